import t, { type Test } from 'tap';
import { BoardSensor, boardLoad, type BoardSample } from '../../../src/daemon/sensing/index.js';
import { jetsonGpuLoadFiles } from '../../../src/daemon/sensing/gpu.js';
import { parseModeNames, parsePmode } from '../../../src/daemon/sensing/nvpmodel.js';
import {
  jetsonNanoJp4, jetsonOrinJp6, jetsonXavierJp5, NANO_GPU, NVPMODEL_STATUS, ORIN_JP6_GPU, PI4_THROTTLED, PI5_THROTTLED,
  raspberryPi4, raspberryPi5, x86Laptop, XAVIER_GPU,
} from './boards.js';
import { fakeRoot, type FakeRoot } from './fake-root.js';

/** A sensor over a fresh tree built by `build`; both are cleaned up with the test. */
function board(t: Test, build: (f: FakeRoot) => void): { f: FakeRoot; s: BoardSensor } {
  const f = fakeRoot();
  t.teardown(f.cleanup);
  build(f);
  const s = new BoardSensor({ root: f.root, nvidiaSmi: null });
  t.teardown(() => s.stop());
  return { f, s };
}

type Reading = Pick<BoardSample, 'cores' | 'cpuTempC' | 'throttled' | 'gpuBusy' | 'gpuSource'> & { powerMode: string | null | undefined };
const reading = (x: BoardSample): Reading => ({
  cores: x.cores, cpuTempC: x.cpuTempC, throttled: x.throttled, gpuBusy: x.gpuBusy, gpuSource: x.gpuSource, powerMode: x.powerMode,
});

t.test('each board fixture reads as that board', async (t) => {
  const cases: [string, (f: FakeRoot) => void, Reading][] = [
    ['Raspberry Pi 4', (f) => raspberryPi4(f), { cores: 4, cpuTempC: 48.2, throttled: false, gpuBusy: null, gpuSource: null, powerMode: undefined }],
    ['Raspberry Pi 5', (f) => raspberryPi5(f), { cores: 4, cpuTempC: 55.1, throttled: false, gpuBusy: null, gpuSource: null, powerMode: undefined }],
    // tj-thermal is the hottest CPU/SoC zone; the cv* zones fail to read and are skipped.
    ['Jetson Orin Nano, JetPack 6', (f) => jetsonOrinJp6(f), { cores: 6, cpuTempC: 47.5, throttled: false, gpuBusy: 0, gpuSource: 'jetson', powerMode: 'MAXN_SUPER' }],
    ['AGX Orin, JetPack 6', (f) => jetsonOrinJp6(f, { cores: 12 }), { cores: 12, cpuTempC: 47.5, throttled: false, gpuBusy: 0, gpuSource: 'jetson', powerMode: 'MAXN_SUPER' }],
    // PMIC-Die reads a fixed 100 °C; it is not a CPU zone, so the CPU reads 36 °C.
    ['Jetson Nano, JetPack 4', jetsonNanoJp4, { cores: 4, cpuTempC: 36, throttled: false, gpuBusy: 0, gpuSource: 'jetson', powerMode: 'MAXN' }],
    ['AGX Xavier, JetPack 5', jetsonXavierJp5, { cores: 8, cpuTempC: 43.5, throttled: false, gpuBusy: 0, gpuSource: 'jetson', powerMode: 'MODE_15W' }],
    // Unprogrammed trips (x86_pkg_temp 0, iwlwifi -32768 °C) must not read as throttling.
    ['x86 laptop', (f) => x86Laptop(f), { cores: 8, cpuTempC: 55, throttled: false, gpuBusy: null, gpuSource: null, powerMode: undefined }],
  ];
  for (const [name, build, want] of cases) {
    const { s } = board(t, build);
    t.same(reading(s.sample()), want, name);
  }
});

t.test('Raspberry Pi 4: a throttled bit set by the firmware shows up; under-voltage alone does not', async (t) => {
  const { f, s } = board(t, (f) => raspberryPi4(f));
  t.same(s.sample().throttle?.raw, 0);
  f.write(PI4_THROTTLED, '50000\n'); // only "has occurred" bits: not throttled now
  t.equal(s.sample().throttled, false);
  f.write(PI4_THROTTLED, '50001\n'); // under-voltage now, clock not lowered
  t.equal(s.sample().throttled, false);
  f.write(PI4_THROTTLED, '50005\n'); // bit 2: throttled now
  const x = s.sample();
  t.equal(x.throttled, true);
  t.equal(x.throttle?.underVoltageNow, true);
  t.equal(boardLoad(x).throttled, true);
});

t.test('Raspberry Pi 4: cpu-thermal crossing its 90 °C critical trip', async (t) => {
  const { f, s } = board(t, (f) => raspberryPi4(f, 89.9));
  t.equal(s.sample().throttled, false);
  f.write('/sys/class/thermal/thermal_zone0/temp', '90000\n');
  t.same([s.sample().throttled, s.sample().cpuTempC], [true, 90]);
});

t.test('Raspberry Pi 5: get_throttled is found under soc@107c000000', async (t) => {
  const { f, s } = board(t, (f) => raspberryPi5(f));
  t.equal(s.sample().throttle?.raw, 0, 'the file is found at all');
  f.write(PI5_THROTTLED, 'e0008\n'); // soft temperature limit now (bit 3)
  const x = s.sample();
  t.equal(x.throttle?.softTempLimitNow, true);
  t.equal(x.throttled, true);
});

t.test('Raspberry Pi 5: fan trips are not throttling, the 110 °C critical trip is', async (t) => {
  const { f, s } = board(t, (f) => raspberryPi5(f, 80)); // above all four fan trips
  t.equal(s.sample().throttled, false);
  f.write('/sys/class/thermal/thermal_zone0/temp', '110000\n');
  t.equal(s.sample().throttled, true);
});

t.test('Jetson Orin, JetPack 6: GPU load found through devfreq, 0 → 650 ‰', async (t) => {
  // Without the gpu.0 link only devfreq discovery can find the load file.
  const { f, s } = board(t, (f) => jetsonOrinJp6(f, { gpu0Link: false }));
  t.same([s.sample().gpuBusy, s.sample().gpuSource], [0, 'jetson']);
  f.write(`${ORIN_JP6_GPU}/load`, '650\n');
  const x = s.sample();
  t.equal(x.gpuBusy, 0.65);
  t.equal(boardLoad(x).gpuBusy, 0.65);
  t.equal(jetsonGpuLoadFiles(f.root)[0], `${f.root}/sys/class/devfreq/17000000.gpu/device/load`, 'the GPU, not the nvdla devfreq device');
});

t.test('Jetson Orin, JetPack 6: the power mode follows nvpmodel', async (t) => {
  const { f, s } = board(t, (f) => jetsonOrinJp6(f));
  t.equal(s.sample().powerMode, 'MAXN_SUPER');
  f.write(NVPMODEL_STATUS, 'pmode:0003\n');
  t.equal(s.sample().powerMode, '7W');
  f.write(NVPMODEL_STATUS, 'pmode:0009\n'); // not in the conf: the id as text
  t.equal(s.sample().powerMode, '9');
  f.write(NVPMODEL_STATUS, 'garbled\n');
  t.equal(s.sample().powerMode, null);
});

t.test('Jetson Orin: tj-thermal past its fan trips is not throttled', async (t) => {
  const { f, s } = board(t, (f) => jetsonOrinJp6(f));
  f.write('/sys/class/thermal/thermal_zone8/temp', '90000\n'); // tj-thermal, above the 85 °C fan trip
  const x = s.sample();
  t.equal(x.cpuTempC, 90);
  t.equal(x.throttled, false);
});

t.test('Jetson Nano, JetPack 4: the soctherm hot trip (100.5 °C) throttles before the critical one', async (t) => {
  const { f, s } = board(t, jetsonNanoJp4);
  f.write('/sys/class/thermal/thermal_zone1/temp', '100000\n');
  t.equal(s.sample().throttled, false);
  f.write('/sys/class/thermal/thermal_zone1/temp', '100500\n');
  t.equal(s.sample().throttled, true, 'at the hot trip, 2 °C below the critical one');
  f.write(`${NANO_GPU}/load`, '312\n');
  f.write(NVPMODEL_STATUS, 'pmode:0001\n');
  t.same([s.sample().gpuBusy, s.sample().powerMode], [0.312, '5W']);
});

t.test('AGX Xavier, JetPack 5: gv11b GPU load and mode changes', async (t) => {
  const { f, s } = board(t, jetsonXavierJp5);
  f.write(`${XAVIER_GPU}/load`, '1000\n');
  f.write(NVPMODEL_STATUS, 'pmode:0000\n');
  t.same([s.sample().gpuBusy, s.sample().powerMode], [1, 'MAXN']);
});

t.test('x86 laptop: a real critical trip still counts', async (t) => {
  const { f, s } = board(t, (f) => x86Laptop(f));
  f.write('/sys/class/thermal/thermal_zone0/temp', '107000\n'); // acpitz
  t.equal(s.sample().throttled, true);
});

t.test('nvpmodel file formats', async (t) => {
  t.equal(parsePmode('pmode:0002\n'), 2);
  t.equal(parsePmode('pmode:0000 fmode:quiet\n'), 0);
  t.equal(parsePmode('xpmode:0002\n'), null);
  t.equal(parsePmode(null), null);
  const names = parseModeNames('< PARAM TYPE=FILE NAME=CPU_ONLINE >\n< POWER_MODEL ID=0 NAME=15W >\nx\n<POWER_MODEL ID=2 NAME=MAXN_SUPER>\n');
  t.same([...names], [[0, '15W'], [2, 'MAXN_SUPER']]);
});
