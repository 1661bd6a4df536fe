/**
 * What the load-aware tree sizing knows about the board. The daemon's sensors (src/daemon/sensing)
 * measure it on the main thread; the engine worker reads it before every step.
 */

/** Tree sizing policies (docs/daemon.md, "Load-aware tree"). */
export type TreePolicy = 'throughput' | 'neighbourly' | 'auto' | 'fixed';
export const TREE_POLICIES: readonly TreePolicy[] = ['throughput', 'neighbourly', 'auto', 'fixed'];

export interface BoardLoad {
  /** CPU used by other processes, as a share 0..1 of the board's whole capacity (all cores). */
  othersCpu: number;
  /** CPU cores on the board (online). */
  cores: number;
  /** Hottest CPU thermal reading in °C; null when none is readable. */
  tempC: number | null;
  /** The board says it is throttling now (Raspberry Pi get_throttled bits 1–3, thermal trip). */
  throttled: boolean;
  /** GPU busy share 0..1 (Jetson load file, NVIDIA utilisation); null when there is none. */
  gpuBusy: number | null;
  /**
   * Share 0..1 of the time some runnable task waited for a CPU (Linux PSI, /proc/pressure/cpu
   * "some"): contention itself, which othersCpu cannot tell from a neighbour on a core of its own.
   * null where the kernel has no PSI.
   */
  cpuPressure: number | null;
}
