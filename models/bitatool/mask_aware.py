"""Mask-aware joint training (bitad issue 11): base weights and BiTA adapters trained together.

Frozen-base adapters (bita_train) leave the base as it is; here the base moves too, so the masks can
shape the representations they read. Two forces per step:
  - an anchor on the normal rows: KL(original ‖ model) on every normal row, plus anchor_ce × CE on
    real text windows (the distillation objective of bitatool.distill), so the model stays close to
    the frozen original it started from; with anchor="teacher" the KL goes to the teacher the base
    was distilled from instead (the caller passes it), so the joint run also continues distillation
    rather than holding the student where it stopped;
  - packed mask groups (bita_train.pack_batch) over self-distilled sequences (the original's greedy
    answers), trained on the model's OWN current choice: target of mask j in the group at s is the
    detached argmax of the normal row at s+j ("online"; it follows the model as it moves). "stored"
    keeps bita_train's targets r[s+1+j] (the original's greedy tokens).
The mask rows read the normal rows' K/V with gradient: the base learns to carry what masks need.
Online targets are teacher-forced on the stored greedy text; they are the model's own greedy
continuation exactly at depth 1 and as long as its choices agree with the stored text deeper.

Resumable: a checkpoint (model, optimizer, step, RNG states) every ckpt_every steps; a run resumed
with the same settings computes what an uninterrupted run computes (single-threaded CPU torch).
"""
from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .bita_train import depth_loss, pack_batch
from .model import NEG, Llama


@dataclass
class MaskAwareSettings:
    steps: int = 300  # the experiment: 300 steps, about 21 min on 2 cores
    batch: int = 8  # self-distilled sequences per step, each carrying `groups` mask groups
    groups: int = 64
    text_batch: int = 4  # real-text windows per step for the CE anchor
    text_len: int = 128
    lr_base: float = 1e-3
    lr_adapters: float = 3e-2
    warmup: int = 20
    min_lr_frac: float = 0.1
    weight_decay: float = 0.0
    mask_weight: float = 1.0
    anchor_kl: float = 1.0
    anchor_ce: float = 0.3  # the experiment: KL to the original + 0.3 x CE on text
    targets: str = "online"  # online: the model's current argmax; stored: the original's greedy tokens
    anchor: str = "original"  # KL to: original (the input model) or teacher (the model it was distilled from)
    seed: int = 7
    ckpt_every: int = 10


# The allowed values of MaskAwareSettings' string options (checked here, offered by the CLI).
CHOICES = {"targets": ("online", "stored"), "anchor": ("original", "teacher")}


def lr_scale(step: int, s: MaskAwareSettings) -> float:
    if step < s.warmup:
        return (step + 1) / s.warmup
    p = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.min_lr_frac + (1 - s.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p))


def causal_rows(ids: torch.Tensor):
    B, T = ids.shape
    return torch.arange(T).unsqueeze(0).expand(B, T), torch.full((T, T), NEG).triu(1).view(1, 1, T, T)


def padded(seqs: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal-row ids [B, T] (0-padded, as pack_batch pads) and their lengths [B]."""
    T = max(len(s) for s, _ in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    for b, (s, _) in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s)
    return ids, torch.tensor([len(s) for s, _ in seqs])


def kl_rows(logits: torch.Tensor, ref_logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per-row KL(ref ‖ model) [N] over the rows where keep is true."""
    lp = F.log_softmax(logits[keep], -1)
    lq = F.log_softmax(ref_logits[keep], -1)
    return (lq.exp() * (lq - lp)).sum(-1)


def online_targets(normal_logits: torch.Tensor, stored: torch.Tensor, starts: list[int], G: int, M: int):
    """Mask j of the group at s targets the model's argmax at normal row s+j (what follows r[0..s+j]),
    detached; invalid where the stored target is (-100)."""
    B, T, _ = normal_logits.shape
    arg = normal_logits.detach().argmax(-1)  # [B, T]
    off = torch.tensor(starts).view(B, 1, 1) + torch.arange(G).view(1, G, 1) + torch.arange(M).view(1, 1, M)
    got = arg.gather(1, off.clamp(max=T - 1).view(B, -1))
    return torch.where(stored >= 0, got, torch.full_like(got, -100))


def mask_part(model: Llama, anchor: Llama, seqs, s: MaskAwareSettings, rng: random.Random) -> dict:
    """Normal rows (with gradient) + packed mask groups of the self-distilled sequences."""
    M, V = model.c.n_masks, model.c.vocab_size
    starts = [_start(sq, s.groups, rng) for sq in seqs]  # pack_batch's own rule, drawn here to reuse them
    _, mids, mpos, bias, stored = pack_batch(seqs, s.groups, M, V, None, starts=starts)
    ids, lens = padded(seqs)
    pos, cb = causal_rows(ids)
    logits, kv = model(ids, pos, cb)
    with torch.no_grad():
        ref, _ = anchor(ids, pos, cb)
    cut = bias.shape[-1] - mids.shape[1]  # pack_batch's context width
    mlogits, _ = model(mids, mpos, bias, past=[(k[:, :cut], v[:, :cut]) for k, v in kv])
    targets = online_targets(logits, stored, starts, s.groups, M) if s.targets == "online" else stored
    mask_loss, per = depth_loss(mlogits, targets, M)
    keep = torch.arange(ids.shape[1]).view(1, -1) < lens.view(-1, 1)
    valid = stored >= 0
    moved = ((targets != stored) & valid).sum().item() / max(1, valid.sum().item())
    return {"mask": mask_loss, "per_depth": per, "kl": kl_rows(logits, ref, keep), "targets_moved": moved}


def _start(seq: tuple[list[int], int], n_groups: int, rng: random.Random) -> int:
    """The offset pack_batch draws for this sequence (same formula, same rng stream)."""
    s, plen = seq
    lo, hi = max(plen, 1), len(s) - 2
    return rng.randint(lo, max(lo, hi - n_groups + 1))


def text_part(model: Llama, anchor: Llama, text: torch.Tensor, s: MaskAwareSettings, rng: random.Random) -> dict:
    """KL to the anchor (original or teacher) + CE on real next tokens of text windows (the anchor on real text)."""
    rows = []
    for _ in range(s.text_batch):
        i = rng.randrange(0, len(text) - s.text_len - 1)
        rows.append(text[i : i + s.text_len + 1])
    batch = torch.stack(rows)
    x, y = batch[:, :-1], batch[:, 1:]
    pos, cb = causal_rows(x)
    logits, _ = model(x, pos, cb)
    with torch.no_grad():
        ref, _ = anchor(x, pos, cb)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return {"kl": kl_rows(logits, ref, torch.ones_like(x, dtype=torch.bool)), "ce": ce}


def joint_loss(model, anchor, seqs, text, s: MaskAwareSettings, rng) -> tuple[torch.Tensor, dict]:
    m = mask_part(model, anchor, seqs, s, rng)
    parts = [m["kl"]]
    ce = torch.zeros(())
    if s.text_batch > 0:
        t = text_part(model, anchor, text, s, rng)
        parts.append(t["kl"])
        ce = t["ce"]
    kl = torch.cat(parts).mean()
    loss = s.mask_weight * m["mask"] + s.anchor_kl * kl + s.anchor_ce * ce
    return loss, {"loss": loss.item(), "mask": m["mask"].item(), "per_depth": [x.item() for x in m["per_depth"]],
                  "kl": kl.item(), "ce": ce.item(), "targets_moved": m["targets_moved"]}


def make_optimizer(model: Llama, s: MaskAwareSettings) -> torch.optim.Optimizer:
    adapters = [model.mask_embeddings, model.prefix]
    base = [p for n, p in model.named_parameters() if n not in ("mask_embeddings", "prefix")]
    for p in model.parameters():
        p.requires_grad_(True)
    groups = [{"params": base, "lr": s.lr_base, "base_lr": s.lr_base, "weight_decay": s.weight_decay},
              {"params": adapters, "lr": s.lr_adapters, "base_lr": s.lr_adapters, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, betas=(0.9, 0.95))


def _save(path: str, model, opt, step: int, rng, s: MaskAwareSettings, secs: float, source: dict) -> None:
    blob = {"settings": asdict(s), "model": model.state_dict(), "opt": opt.state_dict(), "step": step,
            "rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "train_seconds": secs, "source": source}
    torch.save(blob, path + ".tmp")
    os.replace(path + ".tmp", path)


def _resume(path: str, model, opt, rng, s: MaskAwareSettings, source: dict, log) -> tuple[int, float]:
    if not (path and os.path.exists(path)):
        return 0, 0.0
    blob = torch.load(path)
    if blob["settings"] != asdict(s) or blob.get("source", {}).get("sha256") != source.get("sha256"):
        raise SystemExit(f"{path} was written with other settings or from another model; delete it to start over")
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["opt"])
    rng.setstate(blob["rng"])
    torch.set_rng_state(blob["torch_rng"])
    log(f"train-mask-aware: resumed at step {blob['step']}")
    return blob["step"], blob.get("train_seconds", 0.0)


def _progress(step: int, s: MaskAwareSettings, st: dict, el: float, done: int, log) -> None:
    per = el / max(1, done)
    log(f"train-mask-aware step {step}/{s.steps} loss {st['loss']:.3f} mask {st['mask']:.3f} "
        f"(depths {' '.join(f'{x:.2f}' for x in st['per_depth'])}) kl {st['kl']:.4f} ce {st['ce']:.3f} "
        f"targets moved {100 * st['targets_moved']:.1f}% {per:.2f}s/step ETA {per * (s.steps - step) / 60:.1f} min")


def _frozen(m: Llama) -> Llama:
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def train_mask_aware(model: Llama, data: list[tuple[list[int], int]], text: torch.Tensor, s: MaskAwareSettings,
                     ckpt: str | None = None, source: dict | None = None, stop_after: int | None = None,
                     teacher: Llama | None = None, log=print) -> tuple[Llama, dict]:
    """Jointly train `model` (which must carry BiTA adapters) in place; returns it and a summary.
    stop_after: leave after that many steps of THIS run (checkpoint written), to split a run.
    teacher: the KL anchor when s.anchor == "teacher" (same vocabulary)."""
    if not model.c.n_masks:
        raise SystemExit("train-mask-aware: the model has no BiTA adapters (train-bita first)")
    for name, allowed in CHOICES.items():
        if getattr(s, name) not in allowed:
            raise SystemExit(f"--{name} {getattr(s, name)!r}: {' or '.join(allowed)}")
    if s.anchor == "teacher" and (teacher is None or teacher.c.vocab_size != model.c.vocab_size):
        raise SystemExit("train-mask-aware: --anchor teacher needs a teacher with the model's vocabulary")
    source = source or {}
    original = _frozen(copy.deepcopy(model))
    anchor = _frozen(teacher) if s.anchor == "teacher" else original
    opt = make_optimizer(model, s)
    rng = random.Random(s.seed)
    torch.manual_seed(s.seed)
    step, secs_before = _resume(ckpt, model, opt, rng, s, source, log)
    usable = [d for d in data if len(d[0]) - 2 >= max(d[1], 1)]
    if not usable:
        raise SystemExit("train-mask-aware: no usable self-distilled sequences")
    log(f"train-mask-aware: {sum(p.numel() for p in model.parameters())} parameters trained, {s.steps} steps, "
        f"batch {s.batch} x {s.groups} groups + {s.text_batch} text windows, targets {s.targets}")
    model.train()
    t0, step0, last = time.time(), step, {}
    while step < s.steps and (stop_after is None or step - step0 < stop_after):
        seqs = [usable[rng.randrange(len(usable))] for _ in range(s.batch)]
        loss, last = joint_loss(model, anchor, seqs, text, s, rng)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_scale(step, s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 10 == 0 or step == s.steps or step - step0 == stop_after:
            _progress(step, s, last, time.time() - t0, step - step0, log)
        if ckpt and (step % s.ckpt_every == 0 or step == s.steps or step - step0 == stop_after):
            _save(ckpt, model, opt, step, rng, s, secs_before + time.time() - t0, source)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, {"step": step, "done": step >= s.steps, "last": last,
                   "train_seconds": round(secs_before + time.time() - t0, 1), "original": original}


def source_of(path: str) -> dict:
    """Name, absolute path and sha256 of a model file (the `from` and `anchor` of a fine_tuned record)."""
    from .package import file_entry

    return {"name": os.path.basename(path), "path": os.path.abspath(path), "sha256": file_entry(path)["sha256"]}


def anchor_model(s: MaskAwareSettings, shared: str) -> tuple[Llama | None, dict | str]:
    """The KL anchor: the input model itself (None here), or stories260K, the teacher every base of
    this repository is distilled from; with its record."""
    if s.anchor != "teacher":
        return None, "original (the input model)"
    from .data import TEACHER, shared_path
    from .llama2c import load_llama2c

    path = shared_path(TEACHER, shared)
    return load_llama2c(path), {**source_of(path), "name": "stories260K"}


def fine_tuned_record(model: Llama, info: dict, s: MaskAwareSettings, source: dict, anchor: dict | str,
                      sp, held: str, paragraphs: int, data: dict) -> dict:
    """What a package says about a base trained here: from what, with what, and how far it moved
    (agreement with the original, held-out bits per byte before and after)."""
    from .data import encode_paragraphs
    from .evalbpb import bits_per_byte
    from .quality import agreement

    original = info["original"]
    docs = encode_paragraphs(sp, held)[:paragraphs]
    return {"from": source, "anchor": anchor, "steps": info["step"], "options": asdict(s),
            "agreement_with_original": round(agreement(model, original, docs), 4),
            "bpb_before": round(bits_per_byte(original, sp, held, max_paragraphs=paragraphs), 4),
            "bpb_after": round(bits_per_byte(model, sp, held, max_paragraphs=paragraphs), 4),
            "eval": f"first {paragraphs} paragraphs of the held-out last 10% of tinystories_val_subset.txt",
            "data": data, "train_seconds": info["train_seconds"],
            "method": "bitatool train-mask-aware (bitatool.mask_aware)"}


def fine_tuned_of(path: str) -> dict | None:
    """The `fine_tuned` record of a bitatool checkpoint (None for other files or untouched bases),
    for the package manifest: a model trained here is no longer the original."""
    if os.path.isdir(path) or not path.endswith(".pt"):
        return None
    blob = torch.load(path, map_location="cpu")
    return (blob.get("extra") or {}).get("fine_tuned") if isinstance(blob, dict) else None
