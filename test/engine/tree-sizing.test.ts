import t from 'tap';
import { SHARED_SLOTS, writePolicy } from '../../src/engine/protocol.js';
import { TreeSizing } from '../../src/engine/tree-sizing.js';

/** A model that only records the row counts it is asked to run. */
function recordingModel(maxRows: number) {
  const fed: number[] = [];
  return {
    fed,
    model: {
      maxRows,
      maxPositions: 512,
      forward: (_ids: Int32Array, _pos: Int32Array, _bias: Float32Array, q: number) => (fed.push(q), new Float32Array(0)),
      truncate: () => {},
    },
  };
}

t.test('calibration times only the row counts the sizer may choose, the largest included', async (t) => {
  for (const maxRows of [10, 32, 64]) {
    const shared = new Int32Array(new SharedArrayBuffer(SHARED_SLOTS * 4));
    writePolicy(shared, 'throughput');
    const sizing = new TreeSizing(shared, { policy: 'throughput', fixedRows: 8, minRows: 1, maxRows }, () => {});
    const { fed, model } = recordingModel(64);
    sizing.calibrate(model);
    const sizes = [...new Set(fed)];
    t.ok(Math.max(...sizes) === maxRows, `max_rows ${maxRows}: timed ${sizes.join(', ')}`);
    t.ok(sizes.includes(1), 'and one row');
  }
});
