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

// attach() copied the table into the package before checking it: a table for another vocabulary (or
// not a table at all) replaced the package's ngram.bin, then failed, leaving the manifest's sha256
// naming the old file — a package the daemon refuses to load.
t.test('attach refuses a wrong table and leaves the package as it was', async (t) => {
  const dir = tempDir(t);
  const out = py(['-c', `
import hashlib, json, os, sys
from bitatool.ngram import attach, count_tables, write_ngram
pkg = sys.argv[1]
os.makedirs(pkg)
write_ngram(os.path.join(pkg, "ngram.bin"), count_tables([([1, 2, 3, 4, 2, 3, 4], 1)]), 512)
sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
manifest = {"architecture": {"vocab_size": 512}, "files": {"ngram.bin": {"sha256": sha(os.path.join(pkg, "ngram.bin"))}}}
json.dump(manifest, open(os.path.join(pkg, "manifest.json"), "w"))
before = open(os.path.join(pkg, "ngram.bin"), "rb").read()
other = os.path.join(os.path.dirname(pkg), "other.bin")
results = {}
for name, write in [("vocab", lambda p: write_ngram(p, count_tables([([5, 6, 7, 5, 6, 7], 1)]), 700)),
                    ("junk", lambda p: open(p, "wb").write(b"not a table at all"))]:
    write(other)
    try:
        attach(pkg, other, log=lambda *_: None)
        err = None
    except ValueError as e:
        err = str(e)
    results[name] = {"error": err, "unchanged": open(os.path.join(pkg, "ngram.bin"), "rb").read() == before,
                     "sha_matches": json.load(open(os.path.join(pkg, "manifest.json")))["files"]["ngram.bin"]["sha256"] == sha(os.path.join(pkg, "ngram.bin"))}
print(json.dumps(results))
`, join(dir, 'pkg')]);
  const results = JSON.parse(out) as Record<string, { error: string | null; unchanged: boolean; sha_matches: boolean }>;
  for (const [name, r] of Object.entries(results)) {
    t.match(r.error, /not an n-gram table for this package's vocabulary/, `${name}: refused`);
    t.ok(r.unchanged, `${name}: the package's ngram.bin is untouched`);
    t.ok(r.sha_matches, `${name}: the manifest still matches the file`);
  }
});
