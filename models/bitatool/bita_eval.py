"""Per-depth top-1 / top-k accuracy of the BiTA masks on held-out self-distilled text.

Every offset s of every answer is scored (a group at s, context r[0..s-1]; mask j is right when
r[s+1+j], the model's own greedy token, is its top-1 / in its top-k). Top-1 at depth d is what a
chain draft of the masks would get accepted at that depth given the earlier depths were right.
"""
from __future__ import annotations

import time

import torch

from .bita_train import mask_forward
from .model import Llama


@torch.no_grad()
def mask_accuracy(model: Llama, data: list[tuple[list[int], int]], k: int = 5, chunk: int = 256, log=None) -> dict:
    M = model.c.n_masks
    hit1 = torch.zeros(M)
    hitk = torch.zeros(M)
    count = torch.zeros(M)
    t0 = time.time()
    for n, (seq, plen) in enumerate(data):
        lo, hi = max(plen, 1), len(seq) - 2
        for s0 in range(lo, hi + 1, chunk):
            g = min(chunk, hi + 1 - s0)
            logits, targets = mask_forward(model, [(seq, plen)], g, None, starts=[s0])
            lg = logits.view(g, M, -1)
            tg = targets.view(g, M)
            topk = lg.topk(k, -1).indices  # [g, M, k]
            ok = tg >= 0
            hit1 += ((topk[..., 0] == tg) & ok).sum(0).float()
            hitk += ((topk == tg.unsqueeze(-1)).any(-1) & ok).sum(0).float()
            count += ok.sum(0).float()
        if log and (n + 1) % 50 == 0:
            log(f"eval-masks: {n + 1}/{len(data)} sequences, {time.time() - t0:.0f}s")
    top1 = (hit1 / count.clamp(min=1)).tolist()
    topk = (hitk / count.clamp(min=1)).tolist()
    return {"mask_top1": [round(x, 4) for x in top1], f"mask_top{k}": [round(x, 4) for x in topk],
            "mask_eval_targets": [int(x) for x in count.tolist()], "mask_eval_sequences": len(data)}
