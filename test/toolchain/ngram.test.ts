import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NgramTable } from '../../src/decoding/ngram.js';
import { py, tempDir } from './helpers.js';

// The table the toolchain writes (models/bitatool/ngram.py) must read back in the engine with the
// same predictions, including back-off and the min-count pruning of long contexts.
t.test('the engine reads the n-gram table the toolchain counts, prediction for prediction', async (t) => {
  const dir = tempDir(t);
  const out = py(['-c', `
import json, random, sys
from bitatool.ngram import count_tables, write_ngram
rng = random.Random(3)
V = 700   # > 512: keys of three tokens exceed 2^27, still exact in float64
seqs = []
for s in range(60):
    toks = [1] + [rng.randrange(V) if rng.random() < 0.3 else (17 * i) % V for i in range(80)]
    seqs.append((toks, 5))
tables = count_tables(seqs)
write_ngram(sys.argv[1], tables, V)
def predict(ctx):
    for n in (3, 2, 1):
        if len(ctx) >= n and tuple(ctx[-n:]) in tables[n]:
            return tables[n][tuple(ctx[-n:])]
    return -1
probe = [list(toks[max(0, i - 4):i]) for toks, _ in seqs[:20] for i in range(1, len(toks))]
probe += [[rng.randrange(V) for _ in range(3)] for _ in range(200)]
print(json.dumps({"V": V, "cases": [[c, predict(c)] for c in probe], "sizes": {n: len(x) for n, x in tables.items()}}))
`, join(dir, 'ngram.bin')]);
  const { V, cases, sizes } = JSON.parse(out) as { V: number; cases: [number[], number][]; sizes: Record<string, number> };
  const table = NgramTable.parse(readFileSync(join(dir, 'ngram.bin')));
  t.equal(table.V, V);
  t.ok(sizes['3'] > 0 && sizes['2'] > 0 && sizes['1'] > 0, 'three orders written');
  let mismatches = 0;
  let unknown = 0;
  for (const [c, want] of cases) {
    const got = table.predict(Int32Array.from(c), c.length);
    if (got !== want) mismatches++;
    if (want === -1) unknown++;
  }
  t.equal(mismatches, 0, `${cases.length} contexts predicted alike`);
  t.ok(unknown > 0 && unknown < cases.length, 'cases include unknown contexts and known ones');
});
