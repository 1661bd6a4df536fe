"""Load a model from whatever the user points at: a bitatool checkpoint (.pt), a llama2.c .bin,
or a Hugging Face folder. Also attaches adapter files to a base model."""
from __future__ import annotations

import os

import torch

from .checkpoint import load_model, read_blob
from .model import Llama


def load_any(path: str, log=None) -> Llama:
    if os.path.isdir(path):
        from .hf import load_hf

        return load_hf(path, log=log)[0]
    if path.endswith(".bin"):
        from .llama2c import load_llama2c

        return load_llama2c(path)
    return load_model(path)


def read_adapters(path: str) -> tuple[torch.Tensor, torch.Tensor, dict, dict | None]:
    """-> (mask_embeddings [M, dim], prefix [P, 2*L*kv_dim], extra, base state or None).

    Accepts a save_model checkpoint (config/state/extra) or an adapter-only dict holding
    `mask_embeddings` and `prefix` (optionally under "state", with "extra")."""
    blob = read_blob(path)
    state = blob.get("state", blob)
    if "mask_embeddings" not in state or "prefix" not in state:
        raise ValueError(f"{path}: no mask_embeddings/prefix (keys: {sorted(state)[:8]})")
    base = {k: v for k, v in state.items()
            if k not in ("mask_embeddings", "prefix", "extra", "config") and torch.is_tensor(v)} or None
    return state["mask_embeddings"].float(), state["prefix"].float(), blob.get("extra") or {}, base


def attach_adapters(model: Llama, path: str, log=print) -> dict:
    """Put trained adapters on `model` (in place). Returns the file's `extra` (e.g. its eval).
    If the file also holds base weights, they must equal the model's: adapters only make sense on
    the exact base they were trained on."""
    mask, prefix, extra, base = read_adapters(path)
    c = model.c
    if mask.shape[1] != c.dim or prefix.shape[1] != 2 * c.n_layers * c.kv_dim:
        raise ValueError(f"{path}: adapter shapes {tuple(mask.shape)}/{tuple(prefix.shape)} do not fit "
                         f"dim {c.dim}, {c.n_layers} layers, kv_dim {c.kv_dim}")
    if base:
        own = model.state_dict()
        bad = [k for k, v in base.items() if k in own and not torch.equal(own[k], v.to(own[k].dtype))]
        if bad:
            raise ValueError(f"{path}: trained on a different base model ({len(bad)} tensors differ, e.g. {bad[0]})")
    model.add_bita(mask.shape[0], prefix.shape[0])
    with torch.no_grad():
        model.mask_embeddings.copy_(mask)
        model.prefix.copy_(prefix)
    log(f"[adapters] attached {path}: M={mask.shape[0]} masks, P={prefix.shape[0]} prefix slots")
    return extra
