/**
 * Fake procfs/sysfs trees laid out like real boards, built from their documented layouts (device
 * trees, driver sources, and listings published by people who ran the boards). Each builder
 * writes only what BoardSensor reads. Where a value is inferred rather than quoted from a source,
 * the comment says so.
 */
import type { FakeRoot } from './fake-root.js';

/** /proc/stat for `cores` online cores: the aggregate `cpu` line, one `cpuN` line each, then the
 * non-cpu lines a real file has. Columns: user nice system idle iowait irq softirq steal guest guest_nice. */
export function procStat(cores: number, busyPerCore = 100, idlePerCore = 900): string {
  const line = (name: string, n: number) => `${name} ${busyPerCore * n} 0 0 ${idlePerCore * n} 0 0 0 0 0 0`;
  const lines = [line('cpu ', cores)];
  for (let i = 0; i < cores; i++) lines.push(line(`cpu${i}`, 1));
  return [...lines, 'intr 1000 0 0', 'ctxt 5000', 'btime 1700000000', 'processes 900', 'procs_running 1', ''].join('\n');
}

function cpuBoard(f: FakeRoot, cores: number): void {
  f.write('/proc/stat', procStat(cores));
  f.write('/proc/loadavg', '0.10 0.08 0.05 1/200 4242\n');
}

// ---------------------------------------------------------------- Raspberry Pi

/**
 * The Pi firmware driver's get_throttled attribute: hex without 0x (`sprintf(buf, "%x\n", value)`,
 * raspberrypi/linux drivers/firmware/raspberrypi.c; path from raspberrypi/linux PR #2397).
 */
export const PI4_THROTTLED = '/sys/devices/platform/soc/soc:firmware/get_throttled';
/**
 * Pi 5 kernels that name the bus by its address (`soc: soc@107c000000`, arch/arm64/boot/dts/
 * broadcom/bcm2712.dtsi) put the firmware device under that name. Older Pi 5 kernels used
 * `soc { … }` and so the Pi 4 path.
 */
export const PI5_THROTTLED = '/sys/devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled';

/**
 * Raspberry Pi 4 Model B, 64-bit Raspberry Pi OS: 4 × Cortex-A72 (bcm2711.dtsi `cpus`). One zone,
 * `cpu-thermal`, whose only trip is `cpu-crit` at 90 °C, type critical (bcm283x.dtsi, which
 * bcm2711.dtsi includes). No GPU load file, no nvpmodel.
 */
export function raspberryPi4(f: FakeRoot, tempC = 48.2): void {
  cpuBoard(f, 4);
  f.zone(0, 'cpu-thermal', tempC, [{ tempC: 90, type: 'critical' }]);
  f.write(PI4_THROTTLED, '0\n');
}

/**
 * Raspberry Pi 5: 4 × Cortex-A76. `cpu-thermal` has `cpu-crit` at 110 °C first (bcm2712.dtsi),
 * then the four fan trips the board dts appends, type active, at 50, 60, 67.5 and 75 °C
 * (bcm2712-rpi-5-b.dts `&thermal_trips`). get_throttled at the soc@107c000000 path.
 */
export function raspberryPi5(f: FakeRoot, tempC = 55.1): void {
  cpuBoard(f, 4);
  f.zone(0, 'cpu-thermal', tempC, [
    { tempC: 110, type: 'critical' },
    { tempC: 50, type: 'active' },
    { tempC: 60, type: 'active' },
    { tempC: 67.5, type: 'active' },
    { tempC: 75, type: 'active' },
  ]);
  f.write(PI5_THROTTLED, '0\n');
}

// ---------------------------------------------------------------- Jetson

/**
 * nvpmodel's files: the active id as `pmode:000N` in /var/lib/nvpmodel/status (what nvpmodel
 * writes; read this way by scripts that cannot run it), the names in /etc/nvpmodel.conf lines
 * `< POWER_MODEL ID=N NAME=… >` (nvpmodel.conf header format). The PARAM lines are trimmed to one.
 */
export const NVPMODEL_STATUS = '/var/lib/nvpmodel/status';
function nvpmodel(f: FakeRoot, modes: string[], active: number): void {
  const blocks = modes.map((name, id) => `< POWER_MODEL ID=${id} NAME=${name} >\nCPU_ONLINE CORE_0 1\n`);
  f.write('/etc/nvpmodel.conf', `< PARAM TYPE=FILE NAME=CPU_ONLINE >\nCORE_0 /sys/devices/system/cpu/cpu0/online\n\n${blocks.join('\n')}\n< PM_CONFIG DEFAULT=0 >\n`);
  f.write(NVPMODEL_STATUS, `pmode:${String(active).padStart(4, '0')}\n`);
}

/**
 * A devfreq GPU as jetson-stats finds it (jtop/core/gpu.py find_igpu): /sys/class/devfreq/<dev>
 * links into the GPU device's devfreq folder, `device` links back to the GPU device, and the
 * device's of_node/name is the device-tree node name, NUL-terminated like every DT string.
 */
function devfreqGpu(f: FakeRoot, deviceDir: string, devfreqName: string, node: string, perMille: number): void {
  f.write(`${deviceDir}/load`, `${perMille}\n`);
  f.write(`${deviceDir}/of_node/name`, `${node}\0`);
  f.link(`${deviceDir}/devfreq/${devfreqName}/device`, deviceDir);
  f.link(`/sys/class/devfreq/${devfreqName}`, `${deviceDir}/devfreq/${devfreqName}`);
}

/** Orin with JetPack 6 (L4T R36): the GPU is 17000000.gpu on bus@0 (jtop log in
 * rbonghi/jetson_stats #556, Orin NX on L4T 36.3; fastnvmetrics docs/adding_a_board.md). */
export const ORIN_JP6_GPU = '/sys/devices/platform/bus@0/17000000.gpu';
/**
 * Nearby devfreq devices that are not the GPU (their node names are not a Jetson GPU's), so
 * discovery must pick by node name, not take the first entry. Names inferred from the Orin
 * NVDLA/host1x addresses in nvpmodel's Orin config (jetson_stats tests/nvpmodel).
 */
function orinOtherDevfreq(f: FakeRoot): void {
  const dev = '/sys/devices/platform/bus@0/13e00000.host1x/15880000.nvdla0';
  f.write(`${dev}/of_node/name`, 'nvdla0\0');
  f.link(`${dev}/devfreq/15880000.nvdla0/device`, dev);
  f.link('/sys/class/devfreq/15880000.nvdla0', `${dev}/devfreq/15880000.nvdla0`);
}

export interface OrinOptions {
  /** 6 = Orin Nano, 8 = Orin NX, 12 = AGX Orin (fastnvmetrics adding_a_board.md, step 2). */
  cores?: number;
  /**
   * The nvgpu `gpu.0` link under /sys/devices/platform. Reported present on Orin (tegrastats
   * IGPU_LOAD in jetson_stats #360; autoware_universe #11325; glances tegra.py on JetPack 6.2.1),
   * but it is a link, not a documented interface: false builds a tree with the devfreq route only.
   */
  gpu0Link?: boolean;
}

/**
 * Jetson Orin (Nano by default) on JetPack 6. Zone types as listed on an AGX Orin with JetPack
 * 6.0 (fastnvmetrics adding_a_board.md step 5): the cv* zones (DLA/PVA) fail to read while their
 * block is powered down (EAGAIN); Orin Nano and NX have a subset of these zones. The fan trips
 * on tj-thermal are active ones at 85 and 105 °C (mainline tegra234-p3701-0008.dtsi); the other
 * zones' trips are not in any source found, so none are written.
 * Power modes of the Orin Nano Super: 15W=0, 25W=1, MAXN_SUPER=2, 7W=3.
 */
export function jetsonOrinJp6(f: FakeRoot, opts: OrinOptions = {}): void {
  cpuBoard(f, opts.cores ?? 6);
  const zones: [string, number | null][] = [
    ['cpu-thermal', 47.5], ['gpu-thermal', 42], ['cv0-thermal', null], ['cv1-thermal', null], ['cv2-thermal', null],
    ['soc0-thermal', 46], ['soc1-thermal', 44], ['soc2-thermal', 46.5], ['tj-thermal', 47.5], ['tboard-thermal', 37.5],
    ['tdiode-thermal', 39.75],
  ];
  zones.forEach(([type, tempC], i) => {
    const trips = type === 'tj-thermal' ? [{ tempC: 85, type: 'active' }, { tempC: 105, type: 'active' }] : [];
    if (tempC === null) {
      f.zone(i, type, 0, trips);
      f.remove(`/sys/class/thermal/thermal_zone${i}/temp`);
      f.dir(`/sys/class/thermal/thermal_zone${i}/temp`); // a read that fails, like EAGAIN
    } else f.zone(i, type, tempC, trips);
  });
  devfreqGpu(f, ORIN_JP6_GPU, '17000000.gpu', 'gpu', 0);
  orinOtherDevfreq(f);
  if (opts.gpu0Link ?? true) f.link('/sys/devices/platform/gpu.0', ORIN_JP6_GPU);
  nvpmodel(f, ['15W', '25W', 'MAXN_SUPER', '7W'], 2);
}

/**
 * Jetson Nano (T210) on JetPack 4 (L4T 32): 4 × Cortex-A57. The GPU device is /sys/devices/gpu.0
 * itself (its listing in hakandundar34coding/system-monitoring-center #45 shows load and
 * modalias `of:NgpuT<NULL>Cnvidia,tegra210-gm20b`, so node name `gpu`), with devfreq
 * 57000000.gpu under it (nvpmodel's Nano config in jetson_stats tests/nvpmodel). Zone types as
 * listed on a Nano (MartinMatta/Jetson-Nano-temperature #2); PMIC-Die is a fixed 100 °C. The
 * CPU-therm trips are soctherm's: shut down at 102.5 °C, hardware throttle at 100.5 °C (L4T boot
 * log in jetsonhacks/installACMModule #4); their sysfs form, critical then hot, follows the
 * tegra soctherm device trees (cpu-shutdown-trip critical, throttle-trip hot) and is inferred.
 * Power modes MAXN=0, 5W=1.
 */
export const NANO_GPU = '/sys/devices/gpu.0';
export function jetsonNanoJp4(f: FakeRoot): void {
  cpuBoard(f, 4);
  f.zone(0, 'AO-therm', 38.5);
  f.zone(1, 'CPU-therm', 36, [{ tempC: 102.5, type: 'critical' }, { tempC: 100.5, type: 'hot' }]);
  f.zone(2, 'GPU-therm', 34.5, [{ tempC: 103, type: 'critical' }, { tempC: 101, type: 'hot' }]);
  f.zone(3, 'PLL-therm', 35);
  f.zone(4, 'PMIC-Die', 100);
  f.zone(5, 'thermal-fan-est', 36.2);
  devfreqGpu(f, NANO_GPU, '57000000.gpu', 'gpu', 0);
  nvpmodel(f, ['MAXN', '5W'], 0);
}

/**
 * Jetson AGX Xavier (T194) on JetPack 5: 8 Carmel cores, GPU 17000000.gv11b with devfreq of the
 * same name (nvpmodel's Xavier config in jetson_stats tests/nvpmodel), node name gv11b (jtop's
 * list). tegrastats reads /sys/devices/gpu.0/load on AGX Xavier (jetson_stats #360); that it
 * links to the gv11b device is inferred. Zone types as NVIDIA documents them for the same SoC
 * (DRIVE OS 5.1 Thermal Management: CPU-therm, GPU-therm, AUX-therm, AO-therm, tj-therm,
 * Tdiode_tegra). Power modes from the same nvpmodel config, MODE_15W (2) active.
 */
export const XAVIER_GPU = '/sys/devices/17000000.gv11b';
export function jetsonXavierJp5(f: FakeRoot): void {
  cpuBoard(f, 8);
  [['CPU-therm', 41], ['GPU-therm', 39.5], ['AUX-therm', 40], ['AO-therm', 42], ['tj-therm', 43.5], ['Tdiode_tegra', 38]].forEach(
    ([type, tempC], i) => f.zone(i, type as string, tempC as number),
  );
  devfreqGpu(f, XAVIER_GPU, '17000000.gv11b', 'gv11b', 0);
  f.link('/sys/devices/gpu.0', XAVIER_GPU);
  nvpmodel(f, ['MAXN', 'MODE_10W', 'MODE_15W', 'MODE_30W_ALL', 'MODE_30W_6CORE', 'MODE_30W_4CORE', 'MODE_30W_2CORE'], 2);
}

// ---------------------------------------------------------------- x86

/**
 * An Intel laptop, trips as thermald logged them (intel/thermal_daemon #231): acpitz critical at
 * 107 °C, pch_skylake critical at 115 °C, iwlwifi_1 with unprogrammed passive trips at
 * -32768000. x86_pkg_temp has two passive trips that read 0 until user space programs them
 * (drivers/thermal/intel/x86_pkg_temp_thermal.c sys_get_trip_temp: `*temp = 0`).
 */
export function x86Laptop(f: FakeRoot, cores = 8): void {
  cpuBoard(f, cores);
  f.zone(0, 'acpitz', 50, [{ tempC: 107, type: 'critical' }]);
  f.zone(1, 'x86_pkg_temp', 55, [{ tempC: 0, type: 'passive' }, { tempC: 0, type: 'passive' }]);
  f.zone(2, 'pch_skylake', 48.5, [{ tempC: 115, type: 'critical' }]);
  f.zone(3, 'iwlwifi_1', 41, [1, 2, 3].map(() => ({ tempC: -32768, type: 'passive' })));
}
