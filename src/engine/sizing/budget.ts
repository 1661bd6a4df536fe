/**
 * bestBudget: which row budget to decode with, given predicted step cost and gain. Pure: reads its
 * arguments, writes nothing, keeps no state (the stateful part is TreeSizer).
 */

/** The policies that pick a budget from the curves ('auto' resolves to one of these, 'fixed' skips it). */
export type SizingPolicy = 'throughput' | 'neighbourly';

/** Default for TreeSizerConfig.neighbourlyLoss: neighbourly may give up this share of tokens/s. */
export const NEIGHBOURLY_LOSS = 0.08;

/**
 * Auto's neighbourly band (auto is neighbourly on a hot or throttled board). Auto is the default,
 * and the default must stay near the best speed (the bar: >= 0.95 x the best fixed tree),
 * so it drops only rows that buy under 3 % of tokens/s; the explicit neighbourly policy gives up to
 * 8 % (above). Measured when auto still turned neighbourly on CPU load (bench:load, 2 hogs): with
 * the 8 % band it ran at 0.80 x fixed 8, at 5.4 rows and 2.85 tokens per step against 3.55.
 */
export const AUTO_LOSS = 0.03;

/** Predicted committed tokens per ms at `rows`; -Infinity where cost or gain is unusable. */
export function rateAt(cost: ArrayLike<number>, gain: ArrayLike<number>, rows: number): number {
  const t = cost[rows];
  const g = gain[rows];
  return t > 0 && g > 0 && Number.isFinite(t) && Number.isFinite(g) ? g / t : -Infinity;
}

/**
 * Picks from `candidates` (row counts, any order); cost[r] = predicted step ms and gain[r] = expected
 * committed tokens per step, both indexed by row count.
 *
 * - throughput: argmax gain/cost (ties go to the first listed).
 * - neighbourly: the smallest candidate whose predicted tokens/s is within `neighbourlyLoss` of the
 *   best. Why smaller: with one ORT thread the CPU time we take per token is t/g, and by
 *   construction that is at most 1/(1 - loss) of the best; but the work per token, rows/g, falls
 *   much faster than t/g rises on the flat part of the cost curve (a step of 8 rows costs little
 *   more than a step of 4). That work, not our time slice, is what a neighbour on the same board
 *   pays for: shared caches and memory bandwidth, and on a hot or throttled board, heat and clock.
 *   So a few % of our speed buys the neighbour most of the extra rows a wide tree would feed.
 */
export function bestBudget(
  candidates: ArrayLike<number>,
  cost: ArrayLike<number>,
  gain: ArrayLike<number>,
  policy: SizingPolicy,
  neighbourlyLoss: number = NEIGHBOURLY_LOSS,
): number {
  if (candidates.length === 0) throw new RangeError('bestBudget needs at least one candidate');
  let best = candidates[0];
  let bestRate = -Infinity;
  for (let i = 0; i < candidates.length; i++) {
    const rate = rateAt(cost, gain, candidates[i]);
    if (rate > bestRate) {
      bestRate = rate;
      best = candidates[i];
    }
  }
  if (policy === 'throughput' || bestRate === -Infinity) return best;
  const floor = (1 - neighbourlyLoss) * bestRate;
  let pick = best;
  for (let i = 0; i < candidates.length; i++) {
    const r = candidates[i];
    if (r < pick && rateAt(cost, gain, r) >= floor) pick = r;
  }
  return pick;
}
