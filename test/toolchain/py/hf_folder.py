"""Build synthetic Hugging Face folders, import them with bitatool.hf and check the logits against
an independent numpy forward written from HF's naming (q/k/v/o_proj, gate/up/down_proj, rotate-half
RoPE, GQA). The safetensors files are written here by hand, not by bitatool's own writer.

usage: hf_folder.py OUT_DIR  -> prints JSON {variant: {"max_abs_diff", "tokenizer", ...}}
and writes OUT_DIR/<variant>/onnx/{model.onnx, case/} for the ORT check.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch

from bitatool.export import export_onnx
from bitatool.hf import load_hf, tokenizer_meta
from bitatool.model import causal_bias
from bitatool.quantize import quantize_4bit, quantize_int8
from bitatool.tensorio import write_tensors

DATA = os.path.join(os.path.dirname(__file__), "../../../../shared/data")
V, D, L, H, KVH, F = 512, 32, 2, 4, 2, 48
HD = D // H


def bf16_bytes(a):
    u = np.asarray(a, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()  # round to nearest even


def save_st(path, tensors, dtype):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, a in tensors.items():
        raw = {"F32": lambda x: x.astype("<f4").tobytes(), "F16": lambda x: x.astype("<f2").tobytes(),
               "BF16": bf16_bytes}[dtype](a)
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def stored(a, dtype):
    """What the file holds, as float32 (for the reference forward)."""
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        return (np.frombuffer(bf16_bytes(a), "<u2").astype(np.uint32) << 16).view(np.float32).reshape(a.shape)
    return a


def random_weights(rng, bias, tied):
    w = {"model.embed_tokens.weight": rng.normal(0, 0.5, (V, D)), "model.norm.weight": 1 + rng.normal(0, .1, D)}
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = rng.normal(0, .2, (H * HD, D))
        w[p + "self_attn.k_proj.weight"] = rng.normal(0, .2, (KVH * HD, D))
        w[p + "self_attn.v_proj.weight"] = rng.normal(0, .2, (KVH * HD, D))
        w[p + "self_attn.o_proj.weight"] = rng.normal(0, .2, (D, H * HD))
        if bias:
            w[p + "self_attn.q_proj.bias"] = rng.normal(0, .5, H * HD)
            w[p + "self_attn.k_proj.bias"] = rng.normal(0, .5, KVH * HD)
            w[p + "self_attn.v_proj.bias"] = rng.normal(0, .5, KVH * HD)
        w[p + "mlp.gate_proj.weight"] = rng.normal(0, .2, (F, D))
        w[p + "mlp.up_proj.weight"] = rng.normal(0, .2, (F, D))
        w[p + "mlp.down_proj.weight"] = rng.normal(0, .2, (D, F))
        w[p + "input_layernorm.weight"] = 1 + rng.normal(0, .1, D)
        w[p + "post_attention_layernorm.weight"] = 1 + rng.normal(0, .1, D)
    if not tied:
        w["lm_head.weight"] = rng.normal(0, .5, (V, D))
    return {k: v.astype(np.float32) for k, v in w.items()}


def reference_logits(w, ids, theta, eps, bias, tied):
    def norm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def rot(x):  # x [T, heads, HD]
        inv = 1.0 / theta ** (np.arange(0, HD, 2) / HD)
        f = np.arange(len(ids))[:, None] * inv[None]
        emb = np.concatenate([f, f], -1)[:, None, :]
        x1, x2 = x[..., : HD // 2], x[..., HD // 2 :]
        return x * np.cos(emb) + np.concatenate([-x2, x1], -1) * np.sin(emb)

    T = len(ids)
    h = w["model.embed_tokens.weight"][ids].astype(np.float64)
    for i in range(L):
        p = f"model.layers.{i}."
        x = norm(h, w[p + "input_layernorm.weight"])
        lin = lambda n: x @ w[p + n + ".weight"].T + (w[p + n + ".bias"] if bias else 0)
        q = rot(lin("self_attn.q_proj").reshape(T, H, HD))
        k = rot(lin("self_attn.k_proj").reshape(T, KVH, HD))
        v = lin("self_attn.v_proj").reshape(T, KVH, HD)
        out = np.zeros((T, H, HD))
        for hh in range(H):
            kv = hh // (H // KVH)
            s = q[:, hh] @ k[:, kv].T / np.sqrt(HD) + np.triu(np.full((T, T), -np.inf), 1)
            pr = np.exp(s - s.max(-1, keepdims=True))
            out[:, hh] = (pr / pr.sum(-1, keepdims=True)) @ v[:, kv]
        h = h + out.reshape(T, D) @ w[p + "self_attn.o_proj.weight"].T
        x = norm(h, w[p + "post_attention_layernorm.weight"])
        g = x @ w[p + "mlp.gate_proj.weight"].T
        h = h + ((g / (1 + np.exp(-g))) * (x @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    h = norm(h, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]
    return h @ head.T


VARIANTS = {
    # name: (model_type, q/k/v bias, tied, dtype, sharded, tokenizer file)
    "qwen2_bias_f32_sharded": ("qwen2", True, False, "F32", True, "tokenizer.json"),
    "llama_tied_bf16": ("llama", False, True, "BF16", False, "tokenizer.model"),
    "llama_bias_f16": ("llama", True, False, "F16", False, None),
}


def main(out):
    rng = np.random.default_rng(0)
    report = {}
    ids = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376]
    for name, (mt, bias, tied, dtype, sharded, tok) in VARIANTS.items():
        folder = os.path.join(out, name)
        os.makedirs(folder)
        theta = 500000.0 if mt == "llama" else 1000000.0
        cfg = {"model_type": mt, "architectures": ["X"], "hidden_size": D, "num_hidden_layers": L,
               "num_attention_heads": H, "num_key_value_heads": KVH, "intermediate_size": F,
               "vocab_size": V, "max_position_embeddings": 64, "rope_theta": theta, "rms_norm_eps": 1e-6,
               "tie_word_embeddings": tied, "hidden_act": "silu", "torch_dtype": "float32"}
        if mt == "llama":
            cfg["attention_bias"] = bias
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f)
        w = random_weights(rng, bias, tied)
        if sharded:
            names = sorted(w)
            halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
                      "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
            for fn, ns in halves.items():
                save_st(os.path.join(folder, fn), {n: w[n] for n in ns}, dtype)
            with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {}, "weight_map": {n: fn for fn, ns in halves.items() for n in ns}}, f)
        else:
            save_st(os.path.join(folder, "model.safetensors"), w, dtype)
        st = os.path.join(DATA, "models/stories260K")
        if tok == "tokenizer.model":
            shutil.copyfile(os.path.join(st, "tok512.model"), os.path.join(folder, "tokenizer.model"))
        elif tok == "tokenizer.json":
            from bitatool.tokenizer import sentencepiece_to_tokenizer_json
            sentencepiece_to_tokenizer_json(os.path.join(st, "tok512.model"), os.path.join(folder, "tokenizer.json"))
            with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
                json.dump({"add_bos_token": False, "eos_token": {"content": "</s>"},
                           "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}, f)

        model, tok_path = load_hf(folder)
        ref = reference_logits({k: stored(v, dtype).astype(np.float64) for k, v in w.items()}, ids, theta, 1e-6,
                               bias, tied)
        x = torch.tensor([ids])
        T = len(ids)
        with torch.no_grad():
            logits, _ = model(x, torch.arange(T).view(1, T), causal_bias(T), None)
        diff = float(np.abs(logits[0].numpy() - ref).max())
        report[name] = {"max_abs_diff": diff, "logit_scale": float(np.abs(ref).max()),
                        "tokenizer": os.path.basename(tok_path) if tok_path else None,
                        "qkv_bias": model.c.qkv_bias, "tied": model.c.tied_embedding,
                        "rope_theta": model.c.rope_theta, "meta": tokenizer_meta(folder)}
        onnx_dir = os.path.join(folder, "onnx")
        src = os.path.join(onnx_dir, "model.onnx")
        export_onnx(model, src)
        quantize_int8(src, os.path.join(onnx_dir, "model.int8.onnx"))
        quantize_int8(src, os.path.join(onnx_dir, "model.int8w.onnx"), compute="fp32")
        quantize_4bit(src, os.path.join(onnx_dir, "model.int4.onnx"))  # K=48 (down_proj) pads a block
        c = model.c
        t = {"input_ids": x, "position_ids": torch.arange(T).view(1, T), "attention_bias": causal_bias(T),
             "logits": torch.from_numpy(ref.astype(np.float32)).view(1, T, V)}
        for i in range(c.n_layers):
            t[f"past_key_{i}"] = torch.zeros(1, 0, c.n_kv_heads, c.head_dim)
            t[f"past_value_{i}"] = torch.zeros(1, 0, c.n_kv_heads, c.head_dim)
        write_tensors(os.path.join(onnx_dir, "case"), t)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
