import t from 'tap';
import { availableParallelism } from 'node:os';
import { BoardSensor, boardLoad } from '../../../src/daemon/sensing/index.js';
import { decodeThrottled, parseThrottled } from '../../../src/daemon/sensing/thermal.js';
import { fakeRoot, pidStat, until, type FakeRoot } from './fake-root.js';

const PID = 4242;
const close = (a: number | null, b: number) => a !== null && Math.abs(a - b) < 1e-12;

// Two /proc/stat snapshots 200 ticks apart (2 cores × 100). Columns: user nice system idle iowait
// irq softirq steal guest guest_nice. Guest time is already inside user, so the +50 guest ticks
// in the second snapshot must not count twice.
const STAT_1 = [
  'cpu  100 0 100 700 100 0 0 0 30 0',
  'cpu0 50 0 50 350 50 0 0 0 15 0',
  'cpu1 50 0 50 350 50 0 0 0 15 0',
  'intr 348319 0 0 0',
  'ctxt 781092',
  'btime 1700000000',
  'procs_running 2',
  '',
].join('\n');
const STAT_2 = [
  // cpu0: +60 user +10 system +5 irq +5 softirq (busy +80), +10 idle, +10 iowait → 0.8
  // cpu1: +10 user +10 system (busy +20), +70 idle, +10 iowait → 0.2
  'cpu  170 0 120 780 120 5 5 0 80 0',
  'cpu0 110 0 60 360 60 5 5 0 65 0',
  'cpu1 60 0 60 420 60 0 0 0 15 0',
  'intr 349000 0 0 0',
  '',
].join('\n');

function cpuBoard(): FakeRoot {
  const f = fakeRoot();
  f.write('/proc/stat', STAT_1);
  f.write(`/proc/${PID}/stat`, pidStat(PID, 10, 5));
  f.write('/proc/loadavg', '0.64 0.47 0.24 1/133 7192\n');
  return f;
}

t.test('two /proc/stat snapshots give the exact board, per-core, self and others shares', async (t) => {
  const f = cpuBoard();
  t.teardown(f.cleanup);
  const s = new BoardSensor({ root: f.root, pid: PID, nvidiaSmi: null });
  const first = s.sample();
  t.equal(first.cores, 2);
  t.equal(first.loadAvg1, 0.64);
  t.same([first.cpuBusy, first.selfCpu, first.othersCpu, first.coreBusy, first.busiestCore], [null, null, null, null, null], 'no deltas on the first sample');

  f.write('/proc/stat', STAT_2);
  f.write(`/proc/${PID}/stat`, pidStat(PID, 40, 15)); // +40 ticks of the 200 → 0.2 of the board
  const second = s.sample();
  t.equal(second.cpuBusy, 0.5, '100 busy of 200 ticks');
  t.same(second.coreBusy, [0.8, 0.2]);
  t.equal(second.busiestCore, 0.8);
  t.equal(second.selfCpu, 0.2);
  t.ok(close(second.othersCpu, 0.3), `others = 0.5 − 0.2, got ${second.othersCpu}`);
  t.same(boardLoad(second), { othersCpu: second.othersCpu, cores: 2, tempC: null, throttled: false, gpuBusy: null, cpuPressure: null });
});

t.test('/proc/pressure/cpu gives the share of wall time some task waited for a CPU', async (t) => {
  const f = cpuBoard();
  t.teardown(f.cleanup);
  let clock = 1000;
  const psi = (some: number) => `some avg10=1.00 avg60=2.00 avg300=3.00 total=${some}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n`;
  f.write('/proc/pressure/cpu', psi(5_000_000));
  const s = new BoardSensor({ root: f.root, pid: PID, nvidiaSmi: null, now: () => clock });
  t.equal(s.sample().cpuPressure, null, 'no delta on the first sample');
  clock += 250;
  f.write('/proc/pressure/cpu', psi(5_125_000)); // 125 ms stalled in 250 ms
  const busy = s.sample();
  t.equal(busy.cpuPressure, 0.5);
  t.equal(boardLoad(busy).cpuPressure, 0.5);
  clock += 250;
  f.write('/proc/pressure/cpu', psi(5_125_000));
  t.equal(s.sample().cpuPressure, 0, 'nobody waited');
  clock += 250;
  f.write('/proc/pressure/cpu', psi(100)); // counter went back (not a real kernel): no reading
  t.equal(s.sample().cpuPressure, null);
  clock += 250;
  f.write('/proc/pressure/cpu', 'some avg10=1.00 total=abc\n');
  t.equal(s.sample().cpuPressure, null, 'garbled');
  f.remove('/proc/pressure/cpu');
  clock += 250;
  t.equal(s.sample().cpuPressure, null, 'a kernel without PSI');
});

t.test('self busier than the board (reads a few µs apart) floors others at 0', async (t) => {
  const f = cpuBoard();
  t.teardown(f.cleanup);
  const s = new BoardSensor({ root: f.root, pid: PID, nvidiaSmi: null });
  s.sample();
  f.write('/proc/stat', STAT_2);
  f.write(`/proc/${PID}/stat`, pidStat(PID, 110, 15)); // +110 ticks > the board's +100 busy
  const x = s.sample();
  t.equal(x.selfCpu, 110 / 200);
  t.equal(x.othersCpu, 0);
});

t.test('a missing or recycled self pid gives no self/others reading, the board share stays', async (t) => {
  const f = cpuBoard();
  t.teardown(f.cleanup);
  const s = new BoardSensor({ root: f.root, pid: PID, nvidiaSmi: null });
  s.sample();
  f.write('/proc/stat', STAT_2);
  f.write(`/proc/${PID}/stat`, pidStat(PID, 1, 1)); // counters went back: another process now
  const recycled = s.sample();
  t.equal(recycled.cpuBusy, 0.5);
  t.equal(recycled.selfCpu, null);
  t.equal(recycled.othersCpu, null);
  t.equal(boardLoad(recycled).othersCpu, 0, 'unknown others count as none');

  f.remove(`/proc/${PID}`);
  f.write('/proc/stat', STAT_2.replace('cpu  170', 'cpu  270').replace('cpu0 110', 'cpu0 210')); // +100 user
  const gone = s.sample();
  t.equal(gone.selfCpu, null);
  t.equal(gone.othersCpu, null);
  t.equal(gone.cpuBusy, 1);
});

t.test('an empty root gives nulls everywhere and no throw', async (t) => {
  const f = fakeRoot();
  t.teardown(f.cleanup);
  const s = new BoardSensor({ root: f.root, pid: PID, nvidiaSmi: null });
  for (const x of [s.sample(), s.sample()]) {
    const { ts, ...rest } = x;
    t.ok(ts > 0);
    t.same(rest, {
      cores: null, cpuBusy: null, selfCpu: null, othersCpu: null, coreBusy: null, cpuPressure: null, busiestCore: null,
      loadAvg1: null, cpuTempC: null, throttle: null, throttled: false, gpuBusy: null, gpuSource: null,
    });
  }
  t.same(boardLoad(s.sample()), { othersCpu: 0, cores: availableParallelism(), tempC: null, throttled: false, gpuBusy: null, cpuPressure: null });
});

t.test('garbled files give nulls and no throw', async (t) => {
  const f = fakeRoot();
  t.teardown(f.cleanup);
  f.write('/proc/stat', 'cpu  12 abc 3 4\ncpu0 1 2 3 4\n');
  f.write(`/proc/${PID}/stat`, 'garbage without parentheses\n');
  f.write('/proc/loadavg', 'high\n');
  f.zone(0, 'cpu-thermal', 'hot\n');
  f.write('/sys/devices/platform/soc/soc:firmware/get_throttled', 'zz\n');
  f.write('/sys/devices/gpu.0/load', 'n/a\n');
  const s = new BoardSensor({ root: f.root, pid: PID, nvidiaSmi: null });
  s.sample();
  f.write(`/proc/${PID}/stat`, `${PID} (node) S 1 2 3\n`); // too few fields
  const x = s.sample();
  t.same([x.cores, x.cpuBusy, x.selfCpu, x.loadAvg1, x.cpuTempC, x.throttle, x.gpuBusy], [null, null, null, null, null, null, null]);
  t.equal(x.throttled, false);

  // A good /proc/stat after a garbled one: still no delta until two good snapshots exist.
  f.write('/proc/stat', STAT_1);
  t.equal(s.sample().cpuBusy, null);
  f.write('/proc/stat', STAT_2);
  t.equal(s.sample().cpuBusy, 0.5);
});

t.test('the CPU temperature is the hottest CPU/SoC zone, else the hottest zone', async (t) => {
  const cases: { zones: [string, number | string][]; want: number | null }[] = [
    { zones: [['acpitz', 60], ['cpu-thermal', 50], ['gpu-thermal', 70]], want: 50 },
    { zones: [['x86_pkg_temp', 55.5], ['CPU-therm', 48], ['GPU-therm', 90]], want: 55.5 },
    { zones: [['GPU-therm', 90], ['tj-thermal', 61], ['soc0-thermal', 58]], want: 61 },
    { zones: [['acpitz', 40], ['iwlwifi_1', 45]], want: 45 },
    { zones: [['cpu-thermal', 'ENODATA'], ['acpitz', 41]], want: 41 },
    { zones: [], want: null },
  ];
  for (const c of cases) {
    const f = fakeRoot();
    c.zones.forEach(([type, temp], i) => f.zone(i, type, temp));
    const x = new BoardSensor({ root: f.root, nvidiaSmi: null }).sample();
    t.equal(x.cpuTempC, c.want, JSON.stringify(c.zones));
    f.cleanup();
  }
});

t.test('Raspberry Pi get_throttled bits decode; bits 1–3 now mean throttled', async (t) => {
  t.same(decodeThrottled(0x50005), {
    raw: 0x50005, underVoltageNow: true, freqCappedNow: false, throttledNow: true, softTempLimitNow: false,
    underVoltageOccurred: true, freqCappedOccurred: false, throttledOccurred: true, softTempLimitOccurred: false,
  });
  t.equal(parseThrottled('50005\n'), 0x50005, 'sysfs writes bare hex');
  t.equal(parseThrottled('throttled=0x4\n'), 4, 'vcgencmd style');
  t.equal(parseThrottled('0x'), null);
  const cases: [string, boolean][] = [['50005', true], ['4', true], ['2', true], ['8', true], ['1', false], ['f0000', false], ['0', false]];
  for (const [text, throttled] of cases) {
    const f = fakeRoot();
    f.write('/sys/devices/platform/soc/soc:firmware/get_throttled', `${text}\n`);
    const x = new BoardSensor({ root: f.root, nvidiaSmi: null }).sample();
    t.equal(x.throttle?.raw, parseInt(text, 16));
    t.equal(x.throttled, throttled, `0x${text}`);
    f.cleanup();
  }
});

t.test('a zone at or above its first passive/critical trip point is throttled', async (t) => {
  const f = fakeRoot();
  t.teardown(f.cleanup);
  f.zone(0, 'cpu-thermal', 84.999, [{ tempC: 85, type: 'passive' }, { tempC: 100, type: 'critical' }]);
  // Trip 0 only starts a fan; the first throttling trip is trip 1 at 90 °C.
  f.zone(1, 'soc-thermal', 70, [{ tempC: 60, type: 'active' }, { tempC: 90, type: 'passive' }]);
  f.zone(2, 'gpu-thermal', 30, [{ tempC: 50 }]); // no type file: trip 0 taken as it is
  const s = new BoardSensor({ root: f.root, nvidiaSmi: null });
  t.equal(s.sample().throttled, false, 'below every throttling trip (the fan trip does not count)');
  f.zone(0, 'cpu-thermal', 85);
  t.equal(s.sample().throttled, true, 'cpu at its passive trip');
  f.zone(0, 'cpu-thermal', 60);
  f.zone(1, 'soc-thermal', 90);
  t.equal(s.sample().throttled, true, 'soc at its first passive trip');
  f.zone(1, 'soc-thermal', 40);
  f.zone(2, 'gpu-thermal', 51);
  const x = s.sample();
  t.equal(x.throttled, true, 'a non-CPU zone at its trip point counts too');
  t.equal(x.cpuTempC, 60);
  t.equal(boardLoad(x).throttled, true);
});

t.test('Jetson GPU load is read from either sysfs path, per mille', async (t) => {
  for (const path of ['/sys/devices/gpu.0/load', '/sys/devices/platform/gpu.0/load']) {
    const f = fakeRoot();
    f.write(path, '523\n');
    const s = new BoardSensor({ root: f.root, nvidiaSmi: null });
    let x = s.sample();
    t.equal(x.gpuBusy, 0.523, path);
    t.equal(x.gpuSource, 'jetson');
    f.write(path, '1000\n');
    x = s.sample();
    t.equal(x.gpuBusy, 1);
    t.equal(boardLoad(x).gpuBusy, 1);
    f.cleanup();
  }
});
