"""Ranges of the numeric command-line options, one table for every command. They are checked while
arguments are parsed, so a value out of range stops a command before it loads or trains anything,
with argparse's usual one-line error naming the option (exit 2). Also the --help formatter of every
command (each option's default stated once)."""
from __future__ import annotations

import argparse
from dataclasses import fields

AT_LEAST_1 = {"steps", "batch", "seq_len", "groups", "text_batch", "text_len", "ckpt_every", "dim", "n_layers",
              "n_heads", "n_kv_heads", "hidden_dim", "teacher_samples", "n_masks", "threads",
              "max_positions", "max_paragraphs", "n_train", "n_eval", "n_new", "k", "stop_after", "eval_paragraphs",
              "paragraphs", "prompts", "n", "new_tokens", "layers", "heads", "kv_heads", "hidden", "vocab"}
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


def add_settings(p, cls, help: dict, choices: dict | None = None) -> None:
    """One option per field of the settings dataclass `cls` (--field-name), typed and ranged;
    help: a text for every field."""
    for f in fields(cls):
        kind = type(f.default)
        extra = {"choices": choices[f.name]} if choices and f.name in choices else {}
        p.add_argument("--" + f.name.replace("_", "-"), default=f.default, help=help[f.name],
                       type=ranged(f.name, kind) if kind in (int, float) else kind, **extra)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)", added only where the help text does not state its default itself,
    and left off where there is none to state (None, a flag that is off)."""

    def _get_help_string(self, action):
        if "(default" in action.help or action.default is None or action.default is False or action.required:
            return action.help
        return super()._get_help_string(action)
