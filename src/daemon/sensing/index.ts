/** Board sensing: cheap procfs/sysfs load samples for load-aware tree sizing (docs/daemon.md). */
export { BoardSensor, boardLoad, type BoardSample, type BoardSensorOptions } from './sensor.js';
export { LoadFeed, type LoadFeedOptions } from './feed.js';
export type { ThrottleBits } from './thermal.js';
