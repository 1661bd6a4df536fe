/**
 * Temperature and throttling: /sys/class/thermal zones and the Raspberry Pi firmware's
 * get_throttled bits (the same value `vcgencmd get_throttled` prints).
 */
import { listDir, parseInteger, readText, under } from './files.js';

const THERMAL_DIR = '/sys/class/thermal';
/** Where the Pi firmware driver's device sits: `soc/soc:firmware` up to Pi 4 and on older Pi 5
 * kernels, `soc@107c000000/soc@107c000000:firmware` on Pi 5 kernels that name the bus by address. */
const PLATFORM_DIR = '/sys/devices/platform';
const PI_THROTTLED = `${PLATFORM_DIR}/soc/soc:firmware/get_throttled`;
/** Zone types that measure the CPU or the SoC it sits in (Pi `cpu-thermal`, Jetson `CPU-therm`,
 * `tj-thermal`, `soc0-thermal`, x86 `x86_pkg_temp`). */
const CPU_ZONE = /cpu|soc|x86_pkg_temp|^tj|tcpu/i;
/** Zones expose a handful of trip points; stop looking well past any real one. */
const MAX_TRIPS = 16;
/**
 * Trip types at which something slows down: `passive` (cpufreq cooling), `hot` (Tegra soctherm's
 * hardware throttle trip) and `critical`. An `active` trip only turns a fan on.
 */
const THROTTLE_TRIP_TYPES = new Set(['passive', 'hot', 'critical']);

export interface ThermalZone {
  type: string;
  isCpu: boolean;
  tempPath: string;
  /** °C of the zone's lowest passive, hot or critical trip point; null when it has none. */
  tripC: number | null;
}

/**
 * The zones and their trip points, read once: zones and trips are fixed by the device tree or
 * ACPI tables, so a sample only reads the temperatures.
 */
export function discoverZones(root: string): ThermalZone[] {
  return listDir(under(root, THERMAL_DIR))
    .filter((n) => /^thermal_zone\d+$/.test(n))
    .sort((a, b) => Number(a.slice(12)) - Number(b.slice(12)))
    .map((n) => {
      const dir = under(root, `${THERMAL_DIR}/${n}`);
      const type = (readText(`${dir}/type`) ?? '').trim();
      return { type, isCpu: CPU_ZONE.test(type), tempPath: `${dir}/temp`, tripC: throttleTrip(dir) };
    });
}

/**
 * The lowest throttling trip of a zone. The lowest, not the first: trips are listed in device-tree
 * order, not by temperature (Tegra lists `critical` before its lower `hot` trip). A trip without
 * a readable type is taken as it is.
 */
function throttleTrip(zoneDir: string): number | null {
  let lowest: number | null = null;
  for (let i = 0; i < MAX_TRIPS; i++) {
    const milli = parseInteger(readText(`${zoneDir}/trip_point_${i}_temp`));
    if (milli === null) break;
    // At or below 0 °C a trip is unprogrammed, not a limit: x86_pkg_temp shows 0 until user space
    // sets it, iwlwifi -32768000, ACPI DPTF -273250. Taken as limits they would read as throttled.
    if (milli <= 0) continue;
    const type = readText(`${zoneDir}/trip_point_${i}_type`)?.trim();
    if (type !== undefined && !THROTTLE_TRIP_TYPES.has(type)) continue;
    if (lowest === null || milli < lowest) lowest = milli;
  }
  return lowest === null ? null : lowest / 1000;
}

export interface ThermalReading {
  /** The hottest CPU/SoC zone, or the hottest zone when none looks like a CPU. */
  cpuTempC: number | null;
  /** Some zone is at or above its first passive/critical trip point. */
  atTrip: boolean;
}

export function readThermal(zones: readonly ThermalZone[]): ThermalReading {
  let hottestCpu: number | null = null;
  let hottestAny: number | null = null;
  let atTrip = false;
  for (const z of zones) {
    const milli = parseInteger(readText(z.tempPath));
    if (milli === null) continue; // some zones fail to read (EINVAL/ENODATA) while their sensor is off
    const c = milli / 1000;
    if (hottestAny === null || c > hottestAny) hottestAny = c;
    if (z.isCpu && (hottestCpu === null || c > hottestCpu)) hottestCpu = c;
    if (z.tripC !== null && c >= z.tripC) atTrip = true;
  }
  return { cpuTempC: hottestCpu ?? hottestAny, atTrip };
}

/** The Raspberry Pi firmware's get_throttled bits, decoded. */
export interface ThrottleBits {
  raw: number;
  underVoltageNow: boolean; // bit 0
  freqCappedNow: boolean; // bit 1: ARM frequency capped
  throttledNow: boolean; // bit 2
  softTempLimitNow: boolean; // bit 3
  underVoltageOccurred: boolean; // bit 16
  freqCappedOccurred: boolean; // bit 17
  throttledOccurred: boolean; // bit 18
  softTempLimitOccurred: boolean; // bit 19
}

export function decodeThrottled(raw: number): ThrottleBits {
  const bit = (n: number) => (raw & (1 << n)) !== 0;
  return {
    raw,
    underVoltageNow: bit(0),
    freqCappedNow: bit(1),
    throttledNow: bit(2),
    softTempLimitNow: bit(3),
    underVoltageOccurred: bit(16),
    freqCappedOccurred: bit(17),
    throttledOccurred: bit(18),
    softTempLimitOccurred: bit(19),
  };
}

/** Slowed down right now (bits 1–3). Under-voltage alone (bit 0) does not lower the clock. */
export const throttlingNow = (b: ThrottleBits): boolean => b.freqCappedNow || b.throttledNow || b.softTempLimitNow;

/** Hex as sysfs writes it (`50005`), also accepting vcgencmd's `throttled=0x50005`. */
export function parseThrottled(text: string | null): number | null {
  if (text === null) return null;
  const m = /^(?:throttled=)?(?:0x)?([0-9a-f]{1,8})$/i.exec(text.trim());
  return m ? parseInt(m[1], 16) : null;
}

/**
 * The get_throttled file, found once: the known Pi 4 path, else any `*:firmware` device on a
 * `soc` or `soc@…` bus (the Pi 5 layout). Null on boards without the Pi firmware driver.
 */
export function findThrottledFile(root: string): string | null {
  if (readText(under(root, PI_THROTTLED)) !== null) return under(root, PI_THROTTLED);
  for (const bus of listDir(under(root, PLATFORM_DIR)).filter((n) => /^soc(@[0-9a-f]+)?$/.test(n))) {
    const busDir = under(root, `${PLATFORM_DIR}/${bus}`);
    for (const dev of listDir(busDir).filter((n) => n.endsWith(':firmware'))) {
      const file = `${busDir}/${dev}/get_throttled`;
      if (readText(file) !== null) return file;
    }
  }
  return null;
}

export function readThrottle(file: string | null): ThrottleBits | null {
  const raw = file === null ? null : parseThrottled(readText(file));
  return raw === null ? null : decodeThrottled(raw);
}
