import { draftsFromMasks, MaskDrafts } from '../../src/decoding/drafts.js';
import { TargetDistribution, argmax } from '../../src/decoding/sampling.js';
import { Rng } from '../../src/decoding/rng.js';
const V = 32000; const rng = new Rng(1);
const logits = new Float32Array(4 * V); for (let i = 0; i < logits.length; i++) logits[i] = 8 * rng.next();
const md = new MaskDrafts(3, 4); const d = new TargetDistribution(V);
function time(label: string, f: () => void, n = 300) { for (let i = 0; i < 20; i++) f(); const t0 = performance.now(); for (let i = 0; i < n; i++) f(); console.log(label, ((performance.now() - t0) / n * 1000).toFixed(1), 'us'); }
time('draftsFromMasks 3 rows', () => draftsFromMasks(logits, V, 1, 3, md));
time('argmax 1 row', () => argmax(logits, 0, V));
time('dist T=1', () => d.compute(logits, 0, { temperature: 1, topK: 0, topP: 1 }));
time('dist T=.8 k40', () => d.compute(logits, 0, { temperature: 0.8, topK: 40, topP: 1 }));
time('dist T=.8 k40 p.9', () => d.compute(logits, 0, { temperature: 0.8, topK: 40, topP: 0.9 }));
time('dist T=1 p.9', () => d.compute(logits, 0, { temperature: 1, topK: 0, topP: 0.9 }), 20);
let s = 0; time('Math.exp 32000', () => { for (let v = 0; v < V; v++) s += Math.exp(logits[v] - 8); });
