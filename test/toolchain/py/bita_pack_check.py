"""Packed mask-group training rows must equal running each group on its own (bita.md section 2):
context r[0..s-1] followed by masks 0..M-1 at positions s..s+M-1, plain causal attention.
Prints one JSON line {max_abs_diff, groups, targets_ok}."""
import json
import random
import sys

import torch

from bitatool.bita_train import pack_batch, mask_forward
from bitatool.data import TEACHER, shared_path
from bitatool.llama2c import load_llama2c
from bitatool.model import causal_bias

torch.set_num_threads(1)
m = load_llama2c(shared_path(TEACHER, sys.argv[1] if len(sys.argv) > 1 else None))
m.add_bita(3, 4, seed=3)
with torch.no_grad():
    m.prefix.normal_(0, 0.5)  # make the prefix matter
V, M = m.c.vocab_size, 3
g = torch.Generator().manual_seed(0)
seqs = [(torch.randint(3, V, (n,), generator=g).tolist(), p) for n, p in [(30, 5), (22, 9)]]
rng = random.Random(1)
G = 6
torch.manual_seed(0)
ids, mids, mpos, bias, targets = pack_batch(seqs, G, M, V, random.Random(1))
logits, tg = mask_forward(m, seqs, G, random.Random(1))
worst = 0.0
targets_ok = True
for b, (seq, plen) in enumerate(seqs):
    for gi in range(G):
        s = int(mpos[b, gi * M]) # group offset = position of mask 0
        if s > len(seq) - 2:
            continue
        x = torch.tensor([seq[:s] + [V + j for j in range(M)]])
        q = x.shape[1]
        ref, _ = m(x, torch.arange(q).view(1, q), causal_bias(q))
        got = logits[b, gi * M : (gi + 1) * M]
        worst = max(worst, (ref[0, s:] - got).abs().max().item())
        for j in range(M):
            want = seq[s + 1 + j] if s + 1 + j < len(seq) else -100
            targets_ok &= int(tg[b, gi * M + j]) == want
print(json.dumps({"max_abs_diff": worst, "groups": G * len(seqs), "targets_ok": targets_ok}))
