import { expNonPositive } from '../../src/decoding/fastexp.js';
import { Rng } from '../../src/decoding/rng.js';
const V = 32000; const rng = new Rng(1);
const xs = new Float64Array(V); for (let i = 0; i < V; i++) xs[i] = -30 * rng.next();
function time(label: string, f: () => number, n = 300) { let s = 0; for (let i = 0; i < 20; i++) s += f(); const t0 = performance.now(); for (let i = 0; i < n; i++) s += f(); console.log(label, ((performance.now() - t0) / n * 1000).toFixed(1), 'us', s > 0); }
time('Math.exp', () => { let s = 0; for (let v = 0; v < V; v++) s += Math.exp(xs[v]); return s; });
time('fast', () => { let s = 0; for (let v = 0; v < V; v++) s += expNonPositive(xs[v]); return s; });
let worst = 0; for (let i = 0; i < 1e6; i++) { const x = -60 * rng.next(); const e = Math.abs(expNonPositive(x) / Math.exp(x) - 1); if (e > worst) worst = e; }
console.log('max rel err', worst, expNonPositive(0), expNonPositive(-744), Math.exp(-744), expNonPositive(-1e-300));
