/**
 * JIT warm-up for the sizer, run once at engine load. In the worker the sizer runs once per ORT
 * step (~0.6 ms of native code), too rarely for V8 to optimize its decision path in the first
 * thousands of steps (--trace-opt, 2026-12-03: decide/choose/doubt stayed unoptimized through a
 * whole benchmark round); next() then took 47–64 µs per step in the worker loop against ~1 µs in a
 * tight loop. Running a throwaway sizer through synthetic steps first brought it to ~9 µs (bundled
 * model, in-process, 2 runs). The throwaway sizer shares only code with the real one, no state.
 */
import type { TreePolicy } from '../load.js';
import { TreeSizer } from './sizer.js';

/** Synthetic steps: ~100 ms at load on the busy 2-core VM, enough for TurboFan to pick the path up. */
const WARM_STEPS = 12_000;

export function warmUpTreeSizer(minRows: number, maxRows: number, steps = WARM_STEPS): void {
  const cum = new Float64Array(maxRows + 1);
  for (let r = 1; r <= maxRows; r++) cum[r] = 1 + 3 * (1 - Math.exp(-(r - 1) / 6));
  // Both curve-driven policies, so both branches of the decision are warm.
  for (const policy of ['throughput', 'neighbourly'] as TreePolicy[]) {
    const s = new TreeSizer({ policy, minRows, maxRows, fixedRows: Math.min(maxRows, Math.max(minRows, 8)) });
    for (let r = minRows; r <= maxRows; r *= 2) for (let i = 0; i < 3; i++) s.calibrate(r, 0, 0.4 + 0.02 * r);
    s.recordCurve(cum, maxRows);
    for (let i = 0; i < steps / 2; i++) {
      const cached = 16 + (i & 127);
      const rows = s.next(cached, null);
      // Deterministic spread (no RNG: load must not depend on one): ±10 % cost, 1–4 tokens.
      s.record(rows, cached, (0.4 + 0.02 * rows) * (0.9 + 0.2 * ((i * 7919) % 97) / 97), 1 + (i % 4));
      if (i % 16 === 0) s.recordCurve(cum, maxRows);
    }
  }
}
