"""Save/load a model (config + weights, adapters included) as one torch file."""
from __future__ import annotations

import torch

from .model import Config, Llama


def save_model(model: Llama, path: str, extra: dict | None = None) -> None:
    torch.save({"config": model.c.to_dict(), "state": model.state_dict(), "extra": extra or {}}, path)


def load_model(path: str) -> Llama:
    blob = torch.load(path, map_location="cpu")
    c = Config.from_dict(blob["config"])
    m = Llama(c)
    m.load_state_dict(blob["state"])
    return m.eval()
