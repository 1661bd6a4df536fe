"""CLI commands: self-distilled data, base-model distillation, BiTA adapter training and evaluation,
and the recipe that rebuilds the bundled default model."""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, fields

from .options import add_settings, ranged

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(REPO, "models", "_build")


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


def cmd_train_bita(a) -> int:
    from .bita_train import BitaSettings

    _threads(a.threads)
    shared = _shared(a)
    base = load_base(a.model, shared)
    train, ev = self_distilled_sets(data_model(base, a.int8), shared, a.n_train, a.n_eval, a.n_new, a.data_seed)
    s = _settings(a, BitaSettings)
    extra = {"base": a.model, "data": {"n_train": a.n_train, "n_eval": a.n_eval, "n_new": a.n_new,
                                        "seed": a.data_seed, "int8_teacher": a.int8,
                                        "prompts": "train: first 90% of tinystories_val_subset.txt; "
                                                   "eval: held-out last 10%"}}
    # The resumable checkpoint stays in the git-ignored build folder, next to nothing committed.
    ckpt = os.path.join(BUILD, "ckpt-" + os.path.basename(a.out) + ".ckpt") if a.out else None
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

    _threads(a.threads)
    build_default(_shared(a), a.out, log=log, skip_ort=a.no_ort, recipe=a.recipe)
    return 0


def _data_args(p, n_train=2000) -> None:
    p.add_argument("--n-train", type=int, default=n_train, help="self-distilled training sequences")
    p.add_argument("--n-eval", type=int, default=200, help="held-out self-distilled sequences")
    p.add_argument("--n-new", type=int, default=160, help="greedy tokens per prompt")
    p.add_argument("--data-seed", type=int, default=11)
    p.add_argument("--int8", action="store_true", help="targets from the int8-rounded model (int8 package)")


def _common(p) -> None:
    p.add_argument("--shared", help="shared data folder (default: ../shared/data)")
    # 1 thread: on a shared, oversubscribed CPU, 2 OpenMP threads measured 5x slower than 1.
    p.add_argument("--threads", type=ranged("threads", int), default=1)


def register(sub) -> None:
    F = argparse.ArgumentDefaultsHelpFormatter
    from .bita_train import BitaSettings
    from .distill import DistillSettings

    p = sub.add_parser("gen-data", help="greedy self-distilled (prompt, answer) data, cached in models/_build",
                       formatter_class=F)
    p.add_argument("--model", default="stories260k", help="'stories260k', a .pt checkpoint or a llama2.c .bin")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-eval", type=int, default=200)
    p.add_argument("--n-new", type=int, default=160)
    p.add_argument("--int8", action="store_true", help="answers from the int8-rounded model")
    _common(p)
    p.set_defaults(func=cmd_gen_data)

    p = sub.add_parser("distill", help="train a base model by distilling stories260K (resumable)",
                       formatter_class=F)
    p.add_argument("--out", default=os.path.join(BUILD, "default", "student.pt"))
    p.add_argument("--init-from", help="start from this bitatool checkpoint's base weights (e.g. the bundle's "
                   "checkpoint.pt; adapters dropped) instead of a random init, when --out has no checkpoint yet")
    p.add_argument("--init-step", type=int, default=0,
                   help="with --init-from: the step it counts as (the learning-rate schedule and data windows "
                        "continue from there; the optimizer starts fresh)")
    add_settings(p, DistillSettings)
    _common(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("train-bita", help="train BiTA adapters (prefix K/V + masks) on a frozen model, "
                       "then evaluate them on held-out self-distilled text", formatter_class=F)
    p.add_argument("--model", default="stories260k")
    p.add_argument("--out", help="adapters file (.pt); an .eval.json is written next to it")
    _data_args(p)
    add_settings(p, BitaSettings)
    _common(p)
    p.set_defaults(func=cmd_train_bita)

    p = sub.add_parser("eval-masks", help="per-depth top-1/top-k mask accuracy on held-out self-distilled text",
                       formatter_class=F)
    p.add_argument("--model", default="stories260k")
    p.add_argument("--adapters", help="adapters file (or omit when the checkpoint carries them)")
    p.add_argument("--k", type=int, default=5)
    _data_args(p)
    _common(p)
    p.set_defaults(func=cmd_eval_masks)

    p = sub.add_parser("build-default", help="the recipe: rebuild models/tinystories-bita from ../shared/data",
                       formatter_class=F)
    p.add_argument("--out", default=os.path.join(REPO, "models", "tinystories-bita"))
    p.add_argument("--no-ort", action="store_true", help="skip the onnxruntime-node int8 agreement measurement")
    p.add_argument("--recipe", choices=["v2", "v3"], default="v2",
                   help="v2: the bundle (1200 distillation steps, frozen-base adapters); v3: the measured candidate "
                        "(4000 steps, then 200 mask-aware steps; better text, slower trees; docs/models.md)")
    _common(p)
    p.set_defaults(func=cmd_build_default)
