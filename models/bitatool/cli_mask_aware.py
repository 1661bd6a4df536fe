"""`train-mask-aware` (joint base + adapter training, bitatool.mask_aware) and `quality` (the quality
guards of bitatool.quality, for a model next to a reference)."""
from __future__ import annotations

import json
import os
from dataclasses import fields

from .options import HelpFormatter, add_settings, ranged
from .outputs import add_force, check_trained_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(REPO, "models", "_build")
BUNDLED = os.path.join(REPO, "models", "tinystories-bita", "checkpoint.pt")


def log(msg: str) -> None:
    print(msg, flush=True)


def _setup(a):
    import torch

    from .data import SHARED

    torch.set_num_threads(a.threads)  # 1 by default: 2 threads measured 5x slower on this shared CPU
    return os.path.normpath(a.shared or SHARED)


def _training_data(model, shared: str, a):
    import torch

    from .data import encode_paragraphs, load_sp, read_split, self_distilled
    from .distill import text_stream
    from .quantize import fake_quant_int8

    sp = load_sp(shared)
    train_text, held = read_split(shared)
    docs = encode_paragraphs(sp, train_text)
    answers_by = fake_quant_int8(model) if a.int8 else model
    seqs = self_distilled(answers_by, docs, a.n_train, a.n_new, a.data_seed, a.work, log=log)
    return sp, held, seqs, torch.tensor(text_stream(docs))


def cmd_train_mask_aware(a) -> int:
    from .checkpoint import load_model_and_extra, save_model
    from .mask_aware import MaskAwareSettings, anchor_model, fine_tuned_record, source_of, train_mask_aware

    ckpt = a.resume or os.path.join(a.work, "mask-aware-" + os.path.basename(a.out) + ".ckpt")
    check_trained_file(a.out, ckpt, a.force)
    shared = _setup(a)
    os.makedirs(a.work, exist_ok=True)
    model, input_extra = load_model_and_extra(a.model)
    source = source_of(a.model)
    sp, held, seqs, text = _training_data(model, shared, a)
    s = MaskAwareSettings(**{f.name: getattr(a, f.name) for f in fields(MaskAwareSettings)})
    teacher, anchor_source = anchor_model(s, shared)
    model, info = train_mask_aware(model, seqs, text, s, ckpt=ckpt, source=source, stop_after=a.stop_after,
                                   teacher=teacher, log=log)
    if not info["done"]:
        log(f"train-mask-aware: stopped at step {info['step']}/{s.steps}; rerun the same command to resume ({ckpt})")
        return 0
    data = {"n_train": a.n_train, "n_new": a.n_new, "seed": a.data_seed, "int8_answers": a.int8}
    fine_tuned = fine_tuned_record(model, info, s, source, anchor_source, sp, held, a.eval_paragraphs, data)
    save_model(model, a.out, extra={**input_extra, "fine_tuned": fine_tuned})
    log(f"train-mask-aware: wrote {a.out}\n" + json.dumps({k: v for k, v in fine_tuned.items() if k != "options"}))
    return 0


def cmd_quality(a) -> int:
    from .data import TEACHER, load_sp, read_split, shared_path
    from .llama2c import load_llama2c
    from .loaders import load_any
    from .quality import model_quality, table
    from .quantize import fake_quant_int8

    shared = _setup(a)
    sp = load_sp(shared)
    held = read_split(shared)[1]
    teacher = load_llama2c(shared_path(TEACHER, shared))
    load = (lambda p: fake_quant_int8(load_any(p))) if a.int8 else load_any
    model = load(a.checkpoint)
    ref = load(a.reference) if a.reference else None
    opts = {"paragraphs": a.paragraphs, "prompts": a.prompts, "n_new": a.n_new, "seed": a.seed}
    results = {a.checkpoint: model_quality(model, ref, teacher, sp, held, **opts)}
    if ref is not None:
        results[a.reference] = model_quality(ref, None, teacher, sp, held, **opts)
    if a.json:
        print(json.dumps({"models": results, "options": {**opts, "int8": a.int8}}, indent=1))
    else:
        print(table(results))
    return 0


SETTING_HELP = {
    "steps": "joint steps (the issue's experiment: 300, about 21 min on 2 cores)",
    "batch": "self-distilled sequences per step carrying mask groups",
    "groups": "packed mask groups per sequence",
    "text_batch": "real-text windows per step (KL + CE anchor)",
    "text_len": "tokens per real-text window",
    "lr_base": "peak lr of the base weights (not stated in the issue; a quarter of distill's 4e-3)",
    "lr_adapters": "peak lr of masks and prefix (train-bita's 3e-2)",
    "warmup": "warm-up steps (linear, then cosine)",
    "min_lr_frac": "final lr, as a fraction of each peak",
    "weight_decay": "AdamW weight decay",
    "mask_weight": "weight of the packed mask groups' CE",
    "anchor_kl": "weight of KL(original || model) on every normal row",
    "anchor_ce": "weight of CE on real text (the issue's experiment: 0.3)",
    "targets": "online: the model's current argmax at s+j (follows it); stored: the original's greedy tokens",
    "anchor": "KL anchor: original (the input model, held where it is) or teacher (stories260K: the joint run "
              "also continues the base's distillation)",
    "seed": "data order, group offsets and text windows",
    "ckpt_every": "steps between resumable checkpoints",
}


def _common(p) -> None:
    p.add_argument("--shared", help="shared data folder (default: ../shared/data)")
    p.add_argument("--threads", type=ranged("threads", int), default=1, help="torch threads")


def register(sub) -> None:
    from .mask_aware import CHOICES, MaskAwareSettings

    F = HelpFormatter
    p = sub.add_parser("train-mask-aware", formatter_class=F,
                       help="jointly train base + BiTA adapters of a model we own (anchored to the original; "
                            "resumable); the output is a fine-tuned model and records so")
    p.add_argument("--model", required=True, help="bitatool checkpoint (.pt) carrying BiTA adapters")
    p.add_argument("--out", required=True, help="output checkpoint (.pt); one that exists without this run's "
                   "checkpoint (--resume) is refused unless --force")
    add_force(p, "an --out this run did not write")
    add_settings(p, MaskAwareSettings, help=SETTING_HELP, choices=CHOICES)
    p.add_argument("--resume", help="training checkpoint to resume from / write "
                   "(default: <work>/mask-aware-<out name>.ckpt)")
    p.add_argument("--stop-after", type=ranged("stop_after", int),
                   help="leave after this many steps of this run, to resume later (default: run to --steps)")
    p.add_argument("--work", default=os.path.join(BUILD, "mask-aware"), help="cache of data and checkpoints")
    p.add_argument("--n-train", type=ranged("n_train", int), default=2000,
                   help="self-distilled sequences (the original's greedy answers)")
    p.add_argument("--n-new", type=ranged("n_new", int), default=160, help="greedy tokens per prompt")
    p.add_argument("--data-seed", type=int, default=11, help="prompt choice")
    p.add_argument("--int8", action="store_true", help="answers from the int8-rounded original (int8w package)")
    p.add_argument("--eval-paragraphs", type=ranged("eval_paragraphs", int), default=100, help="held-out paragraphs for agreement and bpb")
    _common(p)
    p.set_defaults(func=cmd_train_mask_aware)

    p = sub.add_parser("quality", formatter_class=F,
                       help="quality guards: held-out bpb, agreement with a reference, repeated 4-grams of greedy "
                            "and sampled text, stories260K's NLL of that text")
    p.add_argument("checkpoint")
    p.add_argument("--reference", default=BUNDLED if os.path.exists(BUNDLED) else None,
                   help="reference (original) model; its figures are shown next to the checkpoint's")
    p.add_argument("--paragraphs", type=ranged("paragraphs", int), default=100,
                   help="held-out paragraphs for bpb and agreement")
    p.add_argument("--prompts", type=ranged("prompts", int), default=64,
                   help="held-out prompts continued greedily and sampled")
    p.add_argument("--n-new", type=ranged("n_new", int), default=160, help="tokens per continuation")
    p.add_argument("--seed", type=int, default=5, help="prompts and sampling seed")
    p.add_argument("--int8", action="store_true", help="measure the int8-rounded weights (what int8w serves)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(p)
    p.set_defaults(func=cmd_quality)
