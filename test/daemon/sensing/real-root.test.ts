import t from 'tap';
import { BoardSensor, boardLoad } from '../../../src/daemon/sensing/index.js';

const inUnit = (x: number | null) => x === null || (x >= 0 && x <= 1);

t.test('on this machine the real /proc gives sane ranges', { skip: process.platform !== 'linux' && 'Linux only' }, async (t) => {
  const s = new BoardSensor();
  t.teardown(() => s.stop());
  s.sample();
  const end = Date.now() + 60; // spin so this process has ticks to count
  while (Date.now() < end);
  await new Promise((r) => setTimeout(r, 60));
  const x = s.sample();
  t.ok(x.cores !== null && x.cores >= 1, `cores ${x.cores}`);
  t.not(x.cpuBusy, null, 'the board share is readable');
  t.not(x.selfCpu, null, 'this process is readable');
  for (const k of ['cpuBusy', 'selfCpu', 'othersCpu', 'cpuPressure', 'busiestCore', 'gpuBusy'] as const) t.ok(inUnit(x[k]), `${k} ${x[k]}`);
  t.equal(x.coreBusy?.length, x.cores);
  t.ok(x.coreBusy?.every((v) => v >= 0 && v <= 1));
  t.ok(x.loadAvg1 !== null && x.loadAvg1 >= 0);
  t.ok(x.cpuTempC === null || (x.cpuTempC > -40 && x.cpuTempC < 150), `temp ${x.cpuTempC}`);
  const load = boardLoad(x);
  t.ok(load.cores >= 1 && load.othersCpu >= 0 && load.othersCpu <= 1);
});
