/** Chi-square goodness of fit for the sampling tests. */

function lnGamma(x: number): number {
  // Lanczos approximation (g = 7, n = 9).
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Upper regularised incomplete gamma Q(a, x). */
export function gammaQ(a: number, x: number): number {
  if (x <= 0) return 1;
  const gln = lnGamma(a);
  if (x < a + 1) {
    let sum = 1 / a;
    let del = sum;
    let ap = a;
    for (let n = 0; n < 1000; n++) {
      ap += 1;
      del *= x / ap;
      sum += del;
      if (Math.abs(del) < Math.abs(sum) * 1e-15) break;
    }
    return 1 - sum * Math.exp(-x + a * Math.log(x) - gln);
  }
  let b = x + 1 - a;
  let c = 1e300;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < 1e-300) d = 1e-300;
    c = b + an / c;
    if (Math.abs(c) < 1e-300) c = 1e-300;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return Math.exp(-x + a * Math.log(x) - gln) * h;
}

export interface ChiSquare {
  statistic: number;
  df: number;
  p: number;
  /** Observations that fell in cells of expected probability 0 (must be 0). */
  impossible: number;
}

/**
 * observed counts and expected probabilities per cell (same keys). Cells with an expected count
 * below 5 are pooled into one cell, as the test requires.
 */
export function chiSquare(observed: Map<string, number>, expected: Map<string, number>, n: number): ChiSquare {
  let impossible = 0;
  for (const [k, c] of observed) if (!((expected.get(k) ?? 0) > 0)) impossible += c;
  let stat = 0;
  let cells = 0;
  let poolObs = 0;
  let poolExp = 0;
  for (const [k, p] of expected) {
    if (!(p > 0)) continue;
    const e = p * n;
    const o = observed.get(k) ?? 0;
    if (e < 5) {
      poolObs += o;
      poolExp += e;
      continue;
    }
    stat += ((o - e) * (o - e)) / e;
    cells++;
  }
  if (poolExp > 0) {
    stat += ((poolObs - poolExp) * (poolObs - poolExp)) / Math.max(poolExp, 1e-9);
    cells++;
  }
  const df = Math.max(1, cells - 1);
  return { statistic: stat, df, p: gammaQ(df / 2, stat / 2), impossible };
}

/**
 * Two-sample chi-square test of homogeneity: do counts `a` and `b` come from one distribution?
 * Cells whose pooled expected count is below 5 in either sample are pooled into one cell.
 */
export function chiSquareHomogeneity(a: Map<string, number>, b: Map<string, number>): ChiSquare {
  const na = [...a.values()].reduce((s, x) => s + x, 0);
  const nb = [...b.values()].reduce((s, x) => s + x, 0);
  const n = na + nb;
  const cells: [number, number][] = [];
  let pool: [number, number] = [0, 0];
  for (const k of new Set([...a.keys(), ...b.keys()])) {
    const oa = a.get(k) ?? 0;
    const ob = b.get(k) ?? 0;
    if (((oa + ob) * Math.min(na, nb)) / n < 5) pool = [pool[0] + oa, pool[1] + ob];
    else cells.push([oa, ob]);
  }
  if (pool[0] + pool[1] > 0) cells.push(pool);
  let stat = 0;
  for (const [oa, ob] of cells) {
    const ea = ((oa + ob) * na) / n;
    const eb = ((oa + ob) * nb) / n;
    stat += ((oa - ea) ** 2) / ea + ((ob - eb) ** 2) / eb;
  }
  const df = Math.max(1, cells.length - 1);
  return { statistic: stat, df, p: gammaQ(df / 2, stat / 2), impossible: 0 };
}
