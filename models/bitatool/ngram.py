"""N-gram draft tables: what the model itself tends to say next, counted on its own greedy text.

A table maps the last n tokens (n = 3, 2, 1) to the token that most often followed them in the
model's self-distilled output. The engine walks it greedily to propose a draft chain that joins
the BiTA tree and is verified like every other draft (so it can never change the output); this is
the count-based "skip-gram table" source of the engine issue, shipped as `ngram.bin`.

File layout (little-endian): b"BNG1", int32 V, int32 n_orders, then per order: int32 n, int32 K,
float64 keys[K] (sorted; key = fold(t -> key * V + t) over the n context tokens, oldest first),
int32 next[K].
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import struct

MAGIC = b"BNG1"


def count_tables(seqs, orders=(3, 2, 1), min_count=2):
    """seqs: iterable of (tokens, prompt_len). Counts continuations of generated tokens only."""
    counts = {n: collections.defaultdict(collections.Counter) for n in orders}
    for tokens, prompt_len in seqs:
        for i in range(max(1, prompt_len), len(tokens)):
            for n in orders:
                if i - n >= 0:
                    counts[n][tuple(tokens[i - n : i])][tokens[i]] += 1
    tables = {}
    for n, table in counts.items():
        best = {}
        for ctx, c in table.items():
            tok, k = min(c.items(), key=lambda kv: (-kv[1], kv[0]))
            if k >= min_count or n == 1:
                best[ctx] = tok
        tables[n] = best
    return tables


def _key(ctx, V):
    k = 0
    for t in ctx:
        k = k * V + t
    return float(k)


def write_ngram(path: str, tables: dict, V: int) -> None:
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<ii", V, len(tables)))
        for n in sorted(tables, reverse=True):
            items = sorted((_key(ctx, V), tok) for ctx, tok in tables[n].items())
            f.write(struct.pack("<ii", n, len(items)))
            f.write(struct.pack(f"<{len(items)}d", *[k for k, _ in items]))
            f.write(struct.pack(f"<{len(items)}i", *[t for _, t in items]))


def chain_accuracy(tables, seqs, depth=4, start=20):
    """Mean accepted length of a greedy walk of `depth` tokens, and per-depth hit rates."""
    def predict(ctx):
        for n in sorted(tables, reverse=True):
            if len(ctx) >= n and tuple(ctx[-n:]) in tables[n]:
                return tables[n][tuple(ctx[-n:])]
        return None

    hits = [0] * depth
    total = 0
    for tokens, prompt_len in seqs:
        for i in range(max(start, prompt_len), len(tokens) - depth):
            ctx = list(tokens[:i])
            total += 1
            for d in range(depth):
                p = predict(ctx)
                if p != tokens[i + d]:
                    break
                hits[d] += 1
                ctx.append(p)
    return {"positions": total, "depth_hit": [round(h / max(total, 1), 4) for h in hits],
            "mean_accepted": round(sum(hits) / max(total, 1), 4)}


def build(seqs, held_out, V: int, out_path: str, source: dict, log=print) -> dict:
    """Counts tables on `seqs`, writes them to out_path, measures them on `held_out` and writes the
    measurement and provenance next to it (out_path + ".json")."""
    tables = count_tables(seqs)
    write_ngram(out_path, tables, V)
    ev = chain_accuracy(tables, held_out)
    ev.update({"train_sequences": len(seqs), "held_out_sequences": len(held_out),
               "contexts": {str(n): len(t) for n, t in tables.items()}, "source": source})
    with open(out_path + ".json", "w") as f:
        json.dump(ev, f, indent=1)
    log(f"[ngram] {out_path}: {os.path.getsize(out_path)} B; held-out chain hit rates by depth "
        f"{ev['depth_hit']}, mean accepted {ev['mean_accepted']} of 4")
    return ev


def attach(package_dir: str, ngram_path: str, log=print) -> None:
    """Copies a table into a package and records it in manifest.json (files, drafts, eval.ngram)."""
    from .package import file_entry

    mpath = os.path.join(package_dir, "manifest.json")
    with open(mpath) as f:
        manifest = json.load(f)
    # Checked before anything in the package changes: a wrong table must not replace a good one.
    with open(ngram_path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[:4] != MAGIC or struct.unpack("<i", head[4:8])[0] != manifest["architecture"]["vocab_size"]:
        raise ValueError(f"{ngram_path}: not an n-gram table for this package's vocabulary")
    dst = os.path.join(package_dir, "ngram.bin")
    if os.path.abspath(dst) != os.path.abspath(ngram_path):
        # Copy, then rename: an interrupted attach leaves the old table, which the manifest names.
        shutil.copyfile(ngram_path, dst + ".tmp")
        os.replace(dst + ".tmp", dst)
    manifest["files"]["ngram.bin"] = file_entry(dst)
    manifest["drafts"] = {"ngram": {"file": "ngram.bin"}}
    side = ngram_path + ".json"
    if os.path.exists(side):
        with open(side) as f:
            manifest.setdefault("eval", {})["ngram"] = json.load(f)
    with open(mpath, "w") as f:
        json.dump(manifest, f, indent=1)
    log(f"[ngram] attached {ngram_path} to {package_dir}")
