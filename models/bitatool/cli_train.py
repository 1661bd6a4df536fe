"""CLI commands: self-distilled data, base-model distillation, BiTA adapter training and evaluation,
and the recipe that rebuilds the bundled default model."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, fields

from .options import HelpFormatter, add_settings, ranged
from .outputs import add_force, check_package_dir, check_trained_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(REPO, "models", "_build")
BUNDLE = os.path.join(REPO, "models", "tinystories-bita")


def log(msg: str) -> None:
    print(msg, flush=True)


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)  # Debian's torch defaults to 1


def _shared(a) -> str:
    from .data import SHARED

    return os.path.normpath(a.shared or SHARED)


def load_base(spec: str, shared: str):
    """'stories260k' (the shared llama2.c model) or a bitatool checkpoint (.pt) / llama2.c .bin."""
    from .data import TEACHER, shared_path
    from .loaders import load_any

    if spec.lower() == "stories260k":
        spec = shared_path(TEACHER, shared)
    return load_any(spec, log=log)


def data_model(model, int8: bool):
    """The model whose greedy answers are the targets: the int8-rounded copy when the package is int8."""
    if not int8:
        return model
    from .quantize import fake_quant_int8

    return fake_quant_int8(model)


def self_distilled_sets(model, shared: str, n_train: int, n_eval: int, n_new: int, seed: int):
    """Training prompts from the 90 % split, evaluation prompts from the held-out 10 %."""
    from .data import encode_paragraphs, load_sp, read_split, self_distilled

    sp = load_sp(shared)
    train_text, held = read_split(shared)
    train = self_distilled(model, encode_paragraphs(sp, train_text), n_train, n_new, seed, BUILD, log=log)
    ev = self_distilled(model, encode_paragraphs(sp, held), n_eval, n_new, seed + 1, BUILD, log=log)
    return train, ev


def _settings(a, cls):
    return cls(**{f.name: getattr(a, f.name) for f in fields(cls)})


def cmd_gen_data(a) -> int:
    _threads(a.threads)
    shared = _shared(a)
    m = data_model(load_base(a.model, shared), a.int8)
    train, ev = self_distilled_sets(m, shared, a.n_train, a.n_eval, a.n_new, a.seed)
    log(f"gen-data: {len(train)} train / {len(ev)} held-out sequences (cached in {BUILD})")
    return 0


def cmd_distill(a) -> int:
    from .distill import DistillSettings, distill

    check_trained_file(a.out, a.out + ".ckpt", a.force)  # distill's resumable checkpoint
    _threads(a.threads)
    distill(a.out, _settings(a, DistillSettings), root=_shared(a), log=log, init=a.init_from, init_step=a.init_step)
    return 0


def train_and_eval(model, s, train, ev, out: str | None, ckpt: str | None, extra: dict) -> dict:
    from .bita_eval import mask_accuracy
    from .bita_train import save_adapters, train_bita

    t0 = time.time()
    train_bita(model, train, s, ckpt=ckpt, log=log)
    secs = round(time.time() - t0)
    acc = mask_accuracy(model, ev, log=log)
    log(f"eval-masks: top1 {acc['mask_top1']} top5 {acc['mask_top5']}")
    info = {**acc, "train_seconds": secs, "bita_settings": asdict(s), **extra}
    if out:
        save_adapters(model, out, extra=info)
        with open(os.path.splitext(out)[0] + ".eval.json", "w") as f:
            json.dump(info, f, indent=1)
        log(f"train-bita: wrote {out}")
    return info


def _resume_checkpoint(out: str | None) -> str | None:
    """train-bita's resumable checkpoint: in the git-ignored build folder (next to nothing committed),
    named by --out's base name and a digest of its absolute path, so runs into different folders
    never resume each other."""
    if not out:
        return None
    digest = hashlib.sha256(os.path.abspath(out).encode()).hexdigest()[:12]
    return os.path.join(BUILD, f"ckpt-{os.path.basename(out)}-{digest}.ckpt")


def cmd_train_bita(a) -> int:
    from .bita_train import BitaSettings

    ckpt = _resume_checkpoint(a.out)
    check_trained_file(a.out, ckpt, a.force)
    _threads(a.threads)
    shared = _shared(a)
    base = load_base(a.model, shared)
    train, ev = self_distilled_sets(data_model(base, a.int8), shared, a.n_train, a.n_eval, a.n_new, a.data_seed)
    s = _settings(a, BitaSettings)
    extra = {"base": a.model, "data": {"n_train": a.n_train, "n_eval": a.n_eval, "n_new": a.n_new,
                                        "seed": a.data_seed, "int8_teacher": a.int8,
                                        "prompts": "train: first 90% of tinystories_val_subset.txt; "
                                                   "eval: held-out last 10%"}}
    train_and_eval(base, s, train, ev, a.out, ckpt, extra)
    return 0


def cmd_eval_masks(a) -> int:
    from .bita_eval import mask_accuracy
    from .loaders import attach_adapters

    _threads(a.threads)
    shared = _shared(a)
    base = load_base(a.model, shared)
    _, ev = self_distilled_sets(data_model(base, a.int8), shared, 0, a.n_eval, a.n_new, a.data_seed)
    if a.adapters:
        attach_adapters(base, a.adapters, log=log)
    acc = mask_accuracy(base, ev, k=a.k, log=log)
    print(json.dumps(acc))
    return 0


def cmd_build_default(a) -> int:
    from .default_model import build_default

    out = a.out or BUNDLE
    check_package_dir(out, a.force, own=BUNDLE)
    _threads(a.threads)
    build_default(_shared(a), out, log=log, skip_ort=a.no_ort, recipe=a.recipe)
    return 0


DISTILL_HELP = {
    "dim": "student width", "n_layers": "student layers", "n_heads": "attention heads",
    "n_kv_heads": "key/value heads (grouped-query attention)", "hidden_dim": "SwiGLU hidden width",
    "steps": "training steps (a larger value later extends a finished run)", "batch": "sequences per step",
    "seq_len": "tokens per sequence", "lr": "peak learning rate (AdamW; linear warm-up, then cosine)",
    "min_lr_frac": "final learning rate, as a fraction of the peak", "warmup": "warm-up steps",
    "weight_decay": "AdamW weight decay", "kl_weight": "weight of KL to the teacher's soft targets",
    "ce_weight": "weight of CE on the real next token",
    "teacher_sample_frac": "fraction of each batch drawn from teacher samples",
    "teacher_samples": "sequences sampled (temperature 1) from the teacher, from BOS",
    "seed": "init, teacher samples and data order", "ckpt_every": "steps between resumable checkpoints",
}

BITA_HELP = {
    "n_masks": "BiTA mask tokens M (tokens drafted per step)", "n_prefix": "prefix K/V slots P per layer",
    "steps": "training steps", "batch": "sequences per step", "groups": "packed mask groups per sequence",
    "lr": "peak learning rate of masks and prefix table (AdamW; linear warm-up, then cosine)",
    "mlp_lr": "peak learning rate of the prefix reparameterisation MLP",
    "min_lr_frac": "final learning rate, as a fraction of the peak", "warmup": "warm-up steps",
    "weight_decay": "AdamW weight decay", "prefix_dropout": "dropout on the prefix K/V table while training",
    "reparam_hidden": "hidden width of the prefix reparameterisation MLP (0: train the table directly; "
                      "folded before export)",
    "seed": "init, data order and group offsets", "ckpt_every": "steps between resumable checkpoints",
}


def _data_args(p, n_train=2000) -> None:
    p.add_argument("--n-train", type=ranged("n_train", int), default=n_train, help="self-distilled training sequences")
    p.add_argument("--n-eval", type=ranged("n_eval", int), default=200, help="held-out self-distilled sequences")
    p.add_argument("--n-new", type=ranged("n_new", int), default=160, help="greedy tokens per prompt")
    p.add_argument("--data-seed", type=int, default=11, help="prompt choice")
    p.add_argument("--int8", action="store_true", help="targets from the int8-rounded model (int8 package)")


def _common(p) -> None:
    p.add_argument("--shared", help="shared data folder (default: ../shared/data)")
    # 1 thread: on a shared, oversubscribed CPU, 2 OpenMP threads measured 5x slower than 1.
    p.add_argument("--threads", type=ranged("threads", int), default=1, help="torch threads")


def register(sub) -> None:
    F = HelpFormatter
    from .bita_train import BitaSettings
    from .distill import DistillSettings

    p = sub.add_parser("gen-data", help="greedy self-distilled (prompt, answer) data, cached in models/_build",
                       formatter_class=F)
    p.add_argument("--model", default="stories260k", help="'stories260k', a .pt checkpoint or a llama2.c .bin")
    p.add_argument("--seed", type=int, default=11, help="prompt choice (the held-out set uses seed + 1)")
    p.add_argument("--n-train", type=ranged("n_train", int), default=2000, help="self-distilled training sequences")
    p.add_argument("--n-eval", type=ranged("n_eval", int), default=200, help="held-out self-distilled sequences")
    p.add_argument("--n-new", type=ranged("n_new", int), default=160, help="greedy tokens per prompt")
    p.add_argument("--int8", action="store_true", help="answers from the int8-rounded model")
    _common(p)
    p.set_defaults(func=cmd_gen_data)

    p = sub.add_parser("distill", help="train a base model by distilling stories260K (resumable)",
                       formatter_class=F)
    p.add_argument("--out", default=os.path.join(BUILD, "default", "student.pt"),
                   help="student checkpoint; its resumable checkpoint is <out>.ckpt, and an --out that exists "
                        "without one is refused unless --force")
    add_force(p, "an --out this run did not write")
    p.add_argument("--init-from", help="start from this bitatool checkpoint's base weights (e.g. the bundle's "
                   "checkpoint.pt; adapters dropped) instead of a random init, when --out has no checkpoint yet")
    p.add_argument("--init-step", type=ranged("init_step", int), default=0,
                   help="with --init-from: the step it counts as (the learning-rate schedule and data windows "
                        "continue from there; the optimizer starts fresh)")
    add_settings(p, DistillSettings, help=DISTILL_HELP)
    _common(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("train-bita", help="train BiTA adapters (prefix K/V + masks) on a frozen model, "
                       "then evaluate them on held-out self-distilled text", formatter_class=F)
    p.add_argument("--model", default="stories260k", help="'stories260k', a .pt checkpoint or a llama2.c .bin")
    p.add_argument("--out", help="adapters file (.pt); an .eval.json is written next to it; one that exists "
                   "without this run's checkpoint (models/_build/ckpt-<name>-<path digest>.ckpt) is refused unless --force")
    add_force(p, "an --out this run did not write")
    _data_args(p)
    add_settings(p, BitaSettings, help=BITA_HELP)
    _common(p)
    p.set_defaults(func=cmd_train_bita)

    p = sub.add_parser("eval-masks", help="per-depth top-1/top-k mask accuracy on held-out self-distilled text",
                       formatter_class=F)
    p.add_argument("--model", default="stories260k", help="'stories260k', a .pt checkpoint or a llama2.c .bin")
    p.add_argument("--adapters", help="adapters file (or omit when the checkpoint carries them)")
    p.add_argument("--k", type=ranged("k", int), default=5, help="top-k accuracy reported next to top-1")
    _data_args(p)
    _common(p)
    p.set_defaults(func=cmd_eval_masks)

    p = sub.add_parser("build-default", help="the recipe: rebuild models/tinystories-bita from ../shared/data",
                       formatter_class=F)
    p.add_argument("--out", help="package folder; another than the default must be new or empty, unless --force "
                   "(default: models/tinystories-bita, rebuilt in place)")
    add_force(p, "the package files in a non-empty --out folder")
    p.add_argument("--no-ort", action="store_true", help="skip the onnxruntime-node int8 agreement measurement")
    p.add_argument("--recipe", choices=["v2", "v3"], default="v2",
                   help="v2: the bundle (1200 distillation steps, frozen-base adapters); v3: the measured candidate "
                        "(4000 steps, then 200 mask-aware steps; better text, slower trees; docs/models.md)")
    _common(p)
    p.set_defaults(func=cmd_build_default)
