"""Ranges of the numeric command-line options, one table for every command. They are checked while
arguments are parsed, so a value out of range stops a command before it loads or trains anything,
with argparse's usual one-line error naming the option (exit 2)."""
from __future__ import annotations

import argparse
from dataclasses import fields

AT_LEAST_1 = {"steps", "batch", "seq_len", "groups", "text_batch", "text_len", "ckpt_every", "dim", "n_layers",
              "n_heads", "n_kv_heads", "hidden_dim", "teacher_samples", "n_masks", "threads"}
FRACTIONS = {"min_lr_frac", "teacher_sample_frac", "prefix_dropout"}  # 0..1
ANY = {"seed", "data_seed"}  # every other number must be >= 0


def bounds(name: str) -> tuple[float | None, float | None]:
    if name in ANY:
        return None, None
    if name in FRACTIONS:
        return 0, 1
    return (1 if name in AT_LEAST_1 else 0), None


def ranged(name: str, kind: type):
    """An argparse `type` that converts with `kind` and enforces bounds(name)."""
    lo, hi = bounds(name)

    def parse(text: str):
        v = kind(text)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            want = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value: 'x'"
    return parse


def add_settings(p, cls, help: dict | None = None, choices: dict | None = None) -> None:
    """One option per field of the settings dataclass `cls` (--field-name), typed and ranged."""
    for f in fields(cls):
        kind = type(f.default)
        extra = {"choices": choices[f.name]} if choices and f.name in choices else {}
        if help is not None:
            extra["help"] = help.get(f.name, " ")
        p.add_argument("--" + f.name.replace("_", "-"), default=f.default,
                       type=ranged(f.name, kind) if kind in (int, float) else kind, **extra)
