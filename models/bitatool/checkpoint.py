"""Save/load a model (config + weights, adapters included) as one torch file."""
from __future__ import annotations

import pickle
import zipfile

import torch

from .model import Config, Llama


def save_model(model: Llama, path: str, extra: dict | None = None) -> None:
    torch.save({"config": model.c.to_dict(), "state": model.state_dict(), "extra": extra or {}}, path)


def read_blob(path: str):
    """torch.load, with a file that is not a torch checkpoint (truncated, another format) reported
    as a ValueError naming it."""
    try:
        return torch.load(path, map_location="cpu")
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a bitatool checkpoint ({e})") from e


def load_model(path: str) -> Llama:
    return load_model_and_extra(path)[0]


def load_model_and_extra(path: str) -> tuple[Llama, dict]:
    """The model and the checkpoint's `extra` (what save_model recorded), from one read of the file."""
    blob = read_blob(path)
    if not isinstance(blob, dict) or "config" not in blob:
        raise ValueError(f"{path}: not a bitatool checkpoint (no config; adapters or a training checkpoint?)")
    c = Config.from_dict(blob["config"])
    m = Llama(c)
    m.load_state_dict(blob["state"])
    return m.eval(), blob.get("extra") or {}
