"""BiTA adapter training (bita.md section 3) on a frozen base model.

Layout of one training row (sequence r of length T, groups at consecutive offsets s):
  - the T normal tokens are run once without gradient (they never see the adapters, so their K/V
    are the frozen model's) and become `past` for the mask rows;
  - each group at offset s adds M mask rows: mask j has position s + j, sees r[0..s-1] (plus the
    prefix) and masks 0..j of its own group, and is trained to predict r[s+1+j] (with context up to
    position t = s-1, mask j predicts t+2+j). Groups never see each other.
Only groups with s >= the prompt length are used: their targets are the model's own greedy output.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import Llama, NEG


@dataclass
class BitaSettings:
    n_masks: int = 3
    n_prefix: int = 16
    steps: int = 1000
    batch: int = 8
    groups: int = 64
    lr: float = 3e-2
    mlp_lr: float = 3e-3  # the reparameterisation MLP (a normal-sized network) wants a normal lr
    min_lr_frac: float = 0.0
    warmup: int = 20
    weight_decay: float = 0.0
    prefix_dropout: float = 0.1
    reparam_hidden: int = 256  # > 0: prefix = MLP(table) during training, folded before export
    seed: int = 7
    ckpt_every: int = 50


class PrefixReparam(nn.Module):
    """Prefix-tuning's reparameterisation: a small table through an MLP gives the K/V table. It
    only eases optimisation; `fold` evaluates it once so the exported model keeps plain K/V."""

    def __init__(self, n_prefix: int, in_dim: int, hidden: int, out_dim: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(n_prefix, in_dim, generator=g))
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, out_dim))
        with torch.no_grad():
            self.mlp[2].weight.mul_(0.1)
            self.mlp[2].bias.zero_()

    def forward(self) -> torch.Tensor:
        return self.mlp(self.table)


def pack_batch(seqs: list[tuple[list[int], int]], n_groups: int, M: int, V: int, rng: random.Random | None,
               starts: list[int] | None = None):
    """Build one batch. seqs: (tokens, prompt_len). Group offsets start at a random place in the
    answer (rng), or at the given `starts` (eval walks every offset in chunks). Returns ids/pos of the normal rows (padded), mask ids,
    positions, bias over [normal | masks], targets [B, G*M] (-100 = none)."""
    B = len(seqs)
    T = max(len(s) for s, _ in seqs)
    ids = torch.zeros(B, T, dtype=torch.long)
    pick = starts is None
    starts = [] if pick else list(starts)
    for b, (s, plen) in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
        lo, hi = max(plen, 1), len(s) - 2  # need at least the depth-1 target r[s+1]
        if pick:
            starts.append(rng.randint(lo, max(lo, hi - n_groups + 1)))
    G = n_groups
    off = torch.tensor(starts).view(B, 1) + torch.arange(G).view(1, G)  # [B, G] group offsets s
    j = torch.arange(M)
    mask_ids = (V + j).view(1, 1, M).expand(B, G, M).reshape(B, G * M)
    mask_pos = (off.unsqueeze(-1) + j.view(1, 1, M)).reshape(B, G * M)
    lens = torch.tensor([len(s) for s, _ in seqs]).view(B, 1, 1)
    tgt_idx = off.unsqueeze(-1) + 1 + j.view(1, 1, M)  # [B, G, M]
    valid = (tgt_idx < lens) & (off.unsqueeze(-1) <= lens - 2)
    targets = torch.where(valid, ids.gather(1, tgt_idx.clamp(max=T - 1).view(B, -1)).view(B, G, M),
                          torch.full_like(tgt_idx, -100)).view(B, G * M)
    # Normal rows past the last group's context are never seen: do not compute them.
    cut = max(1, min(T, max(starts) + G - 1))
    ids = ids[:, :cut]
    # bias: context columns c < s visible; own-group masks j' <= j visible.
    ctx_vis = torch.arange(cut).view(1, 1, cut) < off.repeat_interleave(M, 1).unsqueeze(-1)  # [B, GM, cut]
    grp = torch.arange(G).repeat_interleave(M)
    jj = j.repeat(G)
    own = (grp.view(-1, 1) == grp.view(1, -1)) & (jj.view(1, -1) <= jj.view(-1, 1))  # [GM, GM]
    vis = torch.cat([ctx_vis, own.unsqueeze(0).expand(B, -1, -1)], -1)
    bias = torch.where(vis, 0.0, NEG).unsqueeze(1)  # [B, 1, GM, cut+GM]
    return ids, mask_ids, mask_pos, bias, targets


@torch.no_grad()
def base_past(model: Llama, ids: torch.Tensor):
    """Frozen K/V of the normal rows (causal, positions 0..T-1)."""
    B, T = ids.shape
    pos = torch.arange(T).unsqueeze(0).expand(B, T)
    _, kv = model(ids, pos, torch.full((T, T), NEG).triu(1).view(1, 1, T, T))
    return kv


def mask_forward(model: Llama, seqs, n_groups: int, rng, prefix_table=None, starts=None):
    M, V = model.c.n_masks, model.c.vocab_size
    ids, mids, mpos, bias, targets = pack_batch(seqs, n_groups, M, V, rng, starts)
    past = base_past(model, ids)
    logits, _ = model(mids, mpos, bias, past=past, prefix_table=prefix_table)
    return logits, targets  # [B, GM, V], [B, GM]


def depth_loss(logits, targets, M: int):
    """Mean over depths of the per-depth CE (equal weight per depth)."""
    B, GM, V = logits.shape
    lg = logits.view(B, GM // M, M, V)
    tg = targets.view(B, GM // M, M)
    losses = [F.cross_entropy(lg[:, :, j].reshape(-1, V), tg[:, :, j].reshape(-1), ignore_index=-100)
              for j in range(M)]
    return sum(losses) / M, losses


def lr_scale(step: int, s: BitaSettings) -> float:
    if step < s.warmup:
        return (step + 1) / s.warmup
    p = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.min_lr_frac + (1 - s.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p))


def train_bita(model: Llama, data: list[tuple[list[int], int]], s: BitaSettings, ckpt: str | None = None,
               log=print) -> Llama:
    """Attach fresh adapters to `model` (base frozen) and train them; returns the model with plain
    prefix K/V (any reparameterisation folded)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.add_bita(s.n_masks, s.n_prefix, seed=s.seed)
    c = model.c
    reparam = None
    params = [{"params": [model.mask_embeddings], "lr": s.lr}]
    if s.reparam_hidden > 0:
        reparam = PrefixReparam(s.n_prefix, c.dim, s.reparam_hidden, 2 * c.n_layers * c.kv_dim, s.seed)
        params.append({"params": [reparam.table], "lr": s.lr})
        params.append({"params": list(reparam.mlp.parameters()), "lr": s.mlp_lr})
    else:
        params.append({"params": [model.prefix], "lr": s.lr})
    for g in params:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(params, weight_decay=s.weight_decay)
    rng = random.Random(s.seed)
    torch.manual_seed(s.seed)
    step = 0
    if ckpt and os.path.exists(ckpt):
        blob = torch.load(ckpt)
        if blob["settings"] != asdict(s):
            raise SystemExit(f"{ckpt} was written with other settings; delete it to start over")
        model.mask_embeddings.data.copy_(blob["masks"])
        model.prefix.data.copy_(blob["prefix"])
        if reparam is not None:
            reparam.load_state_dict(blob["reparam"])
        opt.load_state_dict(blob["opt"])
        step, _ = blob["step"], rng.setstate(blob["rng"])
        torch.set_rng_state(blob["torch_rng"])
        log(f"train-bita: resumed at step {step}")
    trainable = model.mask_embeddings.numel() + (sum(p.numel() for p in reparam.parameters()) if reparam else model.prefix.numel())
    log(f"train-bita: M={s.n_masks} P={s.n_prefix} reparam={s.reparam_hidden} trainable={trainable} "
        f"steps={s.steps} batch={s.batch} groups={s.groups} data={len(data)} sequences")
    usable = [d for d in data if len(d[0]) - 2 >= max(d[1], 1)]
    t0, step0 = time.time(), step
    while step < s.steps:
        seqs = [usable[rng.randrange(len(usable))] for _ in range(s.batch)]
        table = reparam() if reparam is not None else model.prefix
        table = F.dropout(table, s.prefix_dropout, training=True) if s.prefix_dropout > 0 else table
        logits, targets = mask_forward(model, seqs, s.groups, rng, prefix_table=table)
        loss, per = depth_loss(logits, targets, s.n_masks)
        sc = lr_scale(step, s)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * sc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], 1.0)
        opt.step()
        step += 1
        if step % 10 == 0 or step == s.steps:
            el = time.time() - t0
            log(f"train-bita step {step}/{s.steps} loss {loss.item():.3f} per-depth "
                f"{' '.join(f'{x.item():.2f}' for x in per)} {el / (step - step0):.2f}s/step "
                f"ETA {el / (step - step0) * (s.steps - step) / 60:.1f} min")
        if ckpt and (step % s.ckpt_every == 0 or step == s.steps):
            blob = {"settings": asdict(s), "masks": model.mask_embeddings.data, "prefix": model.prefix.data,
                    "reparam": reparam.state_dict() if reparam else None, "opt": opt.state_dict(), "step": step,
                    "rng": rng.getstate(), "torch_rng": torch.get_rng_state()}
            torch.save(blob, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
    if reparam is not None:
        with torch.no_grad():
            model.prefix.data.copy_(reparam())  # fold: the package carries plain K/V only
    model.mask_embeddings.requires_grad_(False)
    model.prefix.requires_grad_(False)
    return model


def adapter_state(model: Llama) -> dict:
    """Adapter-only file content (bitatool.loaders.attach_adapters reads it; M and P are its shapes)."""
    return {"mask_embeddings": model.mask_embeddings.detach().clone(), "prefix": model.prefix.detach().clone()}


def save_adapters(model: Llama, path: str, extra: dict | None = None) -> None:
    torch.save({**adapter_state(model), "extra": extra or {}}, path)
