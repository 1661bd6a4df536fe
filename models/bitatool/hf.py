"""Import a Hugging Face model folder (LLaMA / Mistral / Qwen2 layouts) without transformers or
the safetensors package.

- config.json gives the shape; unsupported features (rope scaling, sliding windows that matter,
  a head_dim that is not hidden/heads) are refused, not silently ignored.
- *.safetensors are parsed by hand: 8-byte little-endian header length, a JSON header
  {name: {dtype, shape, data_offsets}}, then raw little-endian data (F32, F16, BF16 here).
  Sharded checkpoints (model.safetensors.index.json) are read shard by shard.
- HF LLaMA checkpoints already use rotate-half RoPE, like model.py: no q/k permutation.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import struct
import tempfile

import numpy as np
import torch

from .model import Config, Llama
from .tokenizer import sentencepiece_to_tokenizer_json

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": "bf16", "F64": np.float64}
SUPPORTED = {"llama", "mistral", "qwen2"}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file as float32 numpy arrays."""
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        for name, e in header.items():
            if name == "__metadata__":
                continue
            dt = DTYPES.get(e["dtype"])
            if dt is None:
                raise ValueError(f"{path}: {name} has unsupported dtype {e['dtype']}")
            b, end = e["data_offsets"]
            f.seek(base + b)
            raw = f.read(end - b)
            if dt == "bf16":  # bfloat16 is the top half of a float32
                a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                a = np.frombuffer(raw, dtype=np.dtype(dt).newbyteorder("<")).astype(np.float32)
            out[name] = a.reshape(e["shape"])
    return out


def write_safetensors(path: str, tensors: dict[str, np.ndarray], dtype: str = "F32") -> None:
    """Minimal writer (used by tests to build synthetic folders)."""
    np_dt = {"F32": "<f4", "F16": "<f2"}.get(dtype)
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        if dtype == "BF16":
            raw = (np.asarray(a, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raw = np.asarray(a).astype(np_dt).tobytes()
        header[name] = {"dtype": dtype, "shape": list(np.shape(a)), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for raw in blobs:
            f.write(raw)


def config_from_hf(cfg: dict, max_positions: int | None = None) -> Config:
    mt = cfg.get("model_type", "llama")
    if mt not in SUPPORTED:
        raise ValueError(f"model_type {mt!r} is not supported ({sorted(SUPPORTED)})")
    if cfg.get("rope_scaling"):
        raise ValueError(f"rope_scaling {cfg['rope_scaling']} is not supported")
    dim, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    if cfg.get("head_dim") not in (None, dim // heads):
        raise ValueError(f"head_dim {cfg['head_dim']} != hidden_size / num_attention_heads")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {cfg['hidden_act']!r} is not supported (silu only)")
    qkv_bias = bool(cfg.get("attention_bias", False)) or mt == "qwen2"
    max_positions = max_positions or cfg.get("max_position_embeddings", 2048)
    window = cfg.get("sliding_window")
    if window and (mt == "mistral" or cfg.get("use_sliding_window")) and window < max_positions:
        # model.py attends to the whole context; below the window that is the same function
        max_positions = int(window)
    return Config(
        dim=dim, n_layers=cfg["num_hidden_layers"], n_heads=heads,
        n_kv_heads=cfg.get("num_key_value_heads") or heads, hidden_dim=cfg["intermediate_size"],
        vocab_size=cfg["vocab_size"], max_positions=max_positions,
        rope_theta=float(cfg.get("rope_theta", 10000.0)), norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tied_embedding=bool(cfg.get("tie_word_embeddings", False)), qkv_bias=qkv_bias,
    )


def _weights(folder: str) -> dict[str, np.ndarray]:
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        files = [os.path.join(folder, x) for x in files]
    else:
        files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors files")
    w = {}
    for p in files:
        w.update(read_safetensors(p))
    return w


def load_hf(folder: str, max_positions: int | None = None, tokenizer_out: str | None = None,
            log=None) -> tuple[Llama, str | None]:
    """-> (model, path of a tokenizer.json or None). A sentencepiece tokenizer.model is converted
    (into tokenizer_out, or a temporary folder)."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    c = config_from_hf(cfg, max_positions)
    w = _weights(folder)
    if log:
        log(f"[hf] {cfg.get('model_type', 'llama')}: {len(w)} tensors, dim {c.dim}, {c.n_layers} layers")
    used = set()

    def take(name, shape=None):
        if name not in w:
            raise KeyError(f"{folder}: missing tensor {name}")
        used.add(name)
        a = torch.from_numpy(np.ascontiguousarray(w[name]))
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ValueError(f"{name}: shape {tuple(a.shape)}, expected {tuple(shape)}")
        return a

    m = Llama(c)
    hd = c.head_dim
    with torch.no_grad():
        m.tok_embeddings.weight.copy_(take("model.embed_tokens.weight", (c.vocab_size, c.dim)))
        for i, layer in enumerate(m.layers):
            p = f"model.layers.{i}."
            at = layer.attention
            at.wq.weight.copy_(take(p + "self_attn.q_proj.weight", (c.n_heads * hd, c.dim)))
            at.wk.weight.copy_(take(p + "self_attn.k_proj.weight", (c.kv_dim, c.dim)))
            at.wv.weight.copy_(take(p + "self_attn.v_proj.weight", (c.kv_dim, c.dim)))
            at.wo.weight.copy_(take(p + "self_attn.o_proj.weight", (c.dim, c.n_heads * hd)))
            if c.qkv_bias:
                at.wq.bias.copy_(take(p + "self_attn.q_proj.bias"))
                at.wk.bias.copy_(take(p + "self_attn.k_proj.bias"))
                at.wv.bias.copy_(take(p + "self_attn.v_proj.bias"))
            ff = layer.feed_forward
            ff.w1.weight.copy_(take(p + "mlp.gate_proj.weight", (c.hidden_dim, c.dim)))
            ff.w3.weight.copy_(take(p + "mlp.up_proj.weight", (c.hidden_dim, c.dim)))
            ff.w2.weight.copy_(take(p + "mlp.down_proj.weight", (c.dim, c.hidden_dim)))
            layer.attention_norm.weight.copy_(take(p + "input_layernorm.weight"))
            layer.ffn_norm.weight.copy_(take(p + "post_attention_layernorm.weight"))
        m.norm.weight.copy_(take("model.norm.weight"))
        if not c.tied_embedding:
            m.output.weight.copy_(take("lm_head.weight", (c.vocab_size, c.dim)))
    left = sorted(k for k in w if k not in used and not k.endswith("rotary_emb.inv_freq")
                  and not (c.tied_embedding and k == "lm_head.weight"))
    if left:
        raise ValueError(f"{folder}: unexpected tensors {left[:5]}{' …' if len(left) > 5 else ''}")
    return m.eval(), _tokenizer(folder, tokenizer_out)


def _tokenizer(folder: str, out: str | None) -> str | None:
    tj = os.path.join(folder, "tokenizer.json")
    sp = os.path.join(folder, "tokenizer.model")
    if os.path.exists(tj):
        if out:
            shutil.copyfile(tj, out)
            return out
        return tj
    if os.path.exists(sp):
        out = out or os.path.join(tempfile.mkdtemp(prefix="bitatool-tok-"), "tokenizer.json")
        sentencepiece_to_tokenizer_json(sp, out)
        return out
    return None


def tokenizer_meta(folder: str) -> dict:
    """Special ids, add_bos and chat template of a HF folder, for write_package's keyword arguments
    (bos_id, eos_id, add_bos, chat_template). Missing pieces are left out."""
    out: dict = {}
    cfg, tcfg, tok = {}, {}, {}
    for name, dst in (("config.json", cfg), ("tokenizer_config.json", tcfg), ("tokenizer.json", tok)):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                dst.update(json.load(f))
    ids = {a["content"]: a["id"] for a in tok.get("added_tokens", [])}

    def token_id(key: str) -> int | None:
        t = tcfg.get(key)
        t = t.get("content") if isinstance(t, dict) else t
        return ids.get(t) if t is not None else None

    for key, field in (("bos_id", "bos_token"), ("eos_id", "eos_token")):
        v = token_id(field)
        if v is None:
            v = cfg.get(field + "_id")
            v = v[0] if isinstance(v, list) else v
        if v is not None:
            out[key] = int(v)
    if "add_bos_token" in tcfg:
        out["add_bos"] = bool(tcfg["add_bos_token"])
    elif "bos_id" not in out:
        out["add_bos"] = False
    tmpl = tcfg.get("chat_template")
    if isinstance(tmpl, list):  # named templates: take "default"
        tmpl = next((t["template"] for t in tmpl if t.get("name") == "default"), None)
    if tmpl:
        out["chat_template"] = tmpl
    return out
