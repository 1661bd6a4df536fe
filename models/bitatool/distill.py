"""Train the bundled base model by distilling stories260K: KL to the teacher's soft targets plus CE
on the real next token, on the 90 % TinyStories split and on samples drawn from the teacher.

Resumable: a checkpoint (model, optimizer, step, data RNG) is written every `ckpt_every` steps and
picked up again when the same output path is given.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, asdict

import torch
import torch.nn.functional as F

from .checkpoint import save_model
from .data import BOS, TEACHER, encode_paragraphs, generate, load_sp, read_split, shared_path
from .llama2c import load_llama2c
from .model import Config, Llama, NEG


@dataclass
class DistillSettings:
    dim: int = 96
    n_layers: int = 4
    n_heads: int = 6
    n_kv_heads: int = 3
    hidden_dim: int = 256
    steps: int = 1200
    batch: int = 12
    seq_len: int = 128
    lr: float = 4e-3
    min_lr_frac: float = 0.05
    warmup: int = 20
    weight_decay: float = 0.05
    kl_weight: float = 1.0
    ce_weight: float = 0.3
    teacher_sample_frac: float = 0.5  # fraction of each batch drawn from teacher samples
    teacher_samples: int = 512  # sequences sampled (temperature 1) from the teacher, from BOS
    seed: int = 1234
    ckpt_every: int = 25


def student_config(s: DistillSettings, vocab: int = 512) -> Config:
    return Config(dim=s.dim, n_layers=s.n_layers, n_heads=s.n_heads, n_kv_heads=s.n_kv_heads,
                  hidden_dim=s.hidden_dim, vocab_size=vocab, max_positions=512)


def init_student(c: Config, seed: int) -> Llama:
    torch.manual_seed(seed)
    m = Llama(c)
    # GPT-2 style: small init, residual projections scaled down by depth.
    for n, p in m.named_parameters():
        if p.dim() == 2:
            std = 0.02 / math.sqrt(2 * c.n_layers) if n.endswith(("wo.weight", "w2.weight")) else 0.02
            torch.nn.init.normal_(p, 0.0, std)
    return m


def causal(Q: int) -> torch.Tensor:
    return torch.full((Q, Q), NEG).triu(1).view(1, 1, Q, Q)


def text_stream(docs: list[list[int]]) -> list[int]:
    out: list[int] = []
    for d in docs:
        out.extend(d)
    return out


def teacher_pool(teacher: Llama, n: int, seed: int, cache: str, log) -> list[int]:
    if os.path.exists(cache):
        return torch.load(cache)
    seqs = generate(teacher, [[BOS]] * n, 400, batch=128, temperature=1.0, seed=seed, log=log)
    flat = text_stream(seqs)
    torch.save(flat, cache)
    return flat


def lr_at(step: int, s: DistillSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    p = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (s.min_lr_frac + (1 - s.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def _save_ckpt(ckpt: str, s: DistillSettings, model, opt, step: int, rng, history: list, secs: float) -> None:
    torch.save({"settings": asdict(s), "model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "steps_history": history,
                "train_seconds": secs}, ckpt + ".tmp")
    os.replace(ckpt + ".tmp", ckpt)


def window_starts(rng: random.Random, n_samples: int, n_text: int, s: DistillSettings) -> list[tuple[bool, int]]:
    """One batch's windows: (from teacher samples?, start); the first teacher_sample_frac rows are samples."""
    n_samp = round(s.batch * s.teacher_sample_frac)
    out = []
    for b in range(s.batch):
        n = n_samples if b < n_samp else n_text
        out.append((b < n_samp, rng.randrange(0, n - s.seq_len - 1)))
    return out


def init_from(model: Llama, path: str, at_step: int, rng: random.Random, n_samples: int, n_text: int,
              s: DistillSettings, log) -> list:
    """Start from an earlier model's base weights (adapters, if any, dropped) as if a run had reached
    `at_step`: the data RNG skips that many batches of windows (new windows follow, as they would), the
    optimizer starts fresh (its moments are not in a model file). Returns the steps_history entry."""
    from .checkpoint import load_model
    from .package import file_entry

    src = load_model(path).state_dict()
    want = model.state_dict()
    bad = [k for k, v in want.items() if k not in src or src[k].shape != v.shape]
    if bad:
        raise SystemExit(f"--init-from {path}: not this student's architecture (first mismatch: {bad[0]}); "
                         "pass the settings it was trained with (--dim, --n-layers, ...)")
    model.load_state_dict({k: src[k] for k in want})
    for _ in range(at_step):
        window_starts(rng, n_samples, n_text, s)
    log(f"distill: initialised from {path} at step {at_step} (fresh optimizer state)")
    return [{"init_from": {"name": os.path.basename(path), "sha256": file_entry(path)["sha256"]},
             "at_step": at_step, "dropped": sorted(set(src) - set(want))}]


def distill(out: str, s: DistillSettings, root: str | None = None, log=print, workdir: str | None = None,
            init: str | None = None, init_step: int = 0) -> Llama:
    """init/init_step: start from that model's weights at that step (bitatool distill --init-from)
    when `out` has no resumable checkpoint yet; a checkpoint, once there, wins."""
    workdir = workdir or os.path.dirname(os.path.abspath(out))
    os.makedirs(workdir, exist_ok=True)
    teacher = load_llama2c(shared_path(TEACHER, root))
    for p in teacher.parameters():
        p.requires_grad_(False)
    sp = load_sp(root)
    train_text, _ = read_split(root)
    text = torch.tensor(text_stream(encode_paragraphs(sp, train_text)))
    samples = torch.tensor(teacher_pool(teacher, s.teacher_samples, s.seed,
                                        os.path.join(workdir, f"teacher-samples-{s.teacher_samples}-{s.seed}.pt"), log))
    log(f"distill: {len(text)} text tokens, {len(samples)} teacher-sample tokens")

    model = init_student(student_config(s), s.seed)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=s.lr, betas=(0.9, 0.95))
    ckpt = out + ".ckpt"
    step = 0
    history: list = []
    secs_before = 0.0  # training seconds of earlier (resumed) runs
    rng = random.Random(s.seed)
    if os.path.exists(ckpt):
        blob = torch.load(ckpt)
        was = dict(blob["settings"])
        history = blob.get("steps_history", [])
        secs_before = blob.get("train_seconds", 0.0)
        if was["steps"] != s.steps and {**was, "steps": s.steps} == asdict(s):
            # Only the length changed (a run extended when it proved undertrained): the cosine is
            # stretched from here on; the change is recorded in the checkpoint and the model.
            history = history + [{"at_step": blob["step"], "old_steps": was["steps"], "new_steps": s.steps}]
            log(f"distill: extending from {was['steps']} to {s.steps} steps at step {blob['step']}")
        elif was != asdict(s):
            raise SystemExit(f"{ckpt} was written with other settings; delete it to start over")
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["opt"])
        step = blob["step"]
        rng.setstate(blob["rng"])
        torch.set_rng_state(blob["torch_rng"])
        log(f"distill: resumed at step {step}" + (f" (--init-from {init} ignored: the checkpoint wins)" if init else ""))
    elif init:
        if not 0 <= init_step <= s.steps:
            raise SystemExit(f"--init-step {init_step}: must be within 0..{s.steps} (--steps)")
        history = init_from(model, init, init_step, rng, len(samples), len(text), s, log)
        step = init_step
        _save_ckpt(ckpt, s, model, opt, step, rng, history, 0.0)  # so a later --steps N extends it
    log(f"distill: student {n_params / 1e6:.2f} M params, {s.steps} steps x {s.batch} x {s.seq_len} tokens")
    Q = s.seq_len
    bias = causal(Q)
    pos = torch.arange(Q).unsqueeze(0)
    t0, step0 = time.time(), step
    model.train()
    while step < s.steps:
        starts = window_starts(rng, len(samples), len(text), s)
        batch = torch.stack([(samples if from_samples else text)[i : i + Q + 1] for from_samples, i in starts])
        x, y = batch[:, :-1], batch[:, 1:]
        with torch.no_grad():
            tlogits, _ = teacher(x, pos.expand(x.shape[0], Q), bias)
        logits, _ = model(x, pos.expand(x.shape[0], Q), bias)
        logp = F.log_softmax(logits, -1)
        tp = F.softmax(tlogits, -1)
        kl = (tp * (torch.log(tp + 1e-9) - logp)).sum(-1).mean()
        ce = F.nll_loss(logp.reshape(-1, logp.shape[-1]), y.reshape(-1))
        loss = s.kl_weight * kl + s.ce_weight * ce
        for g in opt.param_groups:
            g["lr"] = lr_at(step, s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 10 == 0 or step == s.steps:
            el = time.time() - t0
            eta = el / (step - step0) * (s.steps - step)
            log(f"distill step {step}/{s.steps} loss {loss.item():.4f} kl {kl.item():.4f} ce {ce.item():.4f} "
                f"lr {lr_at(step, s):.2e} {el / (step - step0):.2f}s/step ETA {eta / 60:.1f} min")
        if step % s.ckpt_every == 0 or step == s.steps:
            _save_ckpt(ckpt, s, model, opt, step, rng, history, secs_before + time.time() - t0)
    model.eval()
    save_model(model, out, extra={"distill": asdict(s), "teacher": TEACHER, "steps_history": history,
                                  "train_seconds_this_run": round(time.time() - t0),
                                  "train_seconds_total": round(secs_before + time.time() - t0)})
    log(f"distill: wrote {out}")
    return model
