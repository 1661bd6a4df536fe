"""Write a model package folder (docs/package-format.md): graphs, tokenizer, manifest.json."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

from .export import export_onnx
from .model import NEG, Llama
from .quantize import quantize_4bit, quantize_int8

FORMAT = "bitad-model"
FORMAT_VERSION = 1

# variant -> (file name, how its weights are stored)
VARIANTS = {
    "fp32": ("model.onnx", "float32 weights"),
    "int8": ("model.int8.onnx", "weight-only int8, symmetric per output column, "
             "com.microsoft.DynamicQuantizeMatMul; tied embedding stored once as int8 rows"),
    "int8w": ("model.int8w.onnx", "int8 storage, fp32 compute: symmetric per output column, rebuilt by "
              "Cast+Mul that onnxruntime constant-folds at load; computes exactly fake_quant_int8's function"),
    "int4": ("model.int4.onnx", "weight-only 4-bit, symmetric blocks of 32, com.microsoft.MatMulNBits "
             "(accuracy_level 4); tied embedding stored once, looked up with GatherBlockQuantized"),
}


def graph_io() -> dict:
    """The manifest's "io": the graph interface export_onnx writes (docs/package-format.md)."""
    return {
        "kv_layout": "sequence-major [1, seq, n_kv_heads, head_dim]",
        "inputs": ["input_ids", "position_ids", "attention_bias"],
        "past_key": "past_key_{i}", "past_value": "past_value_{i}",
        "logits": "logits",
        "new_key": "new_key_{i}", "new_value": "new_value_{i}",
        "bias_hidden": NEG,
    }


def file_entry(path: str) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"bytes": os.path.getsize(path), "sha256": h.hexdigest()}


def _token_id(tok: dict, content: str) -> int | None:
    for a in tok.get("added_tokens", []):
        if a.get("content") == content:
            return int(a["id"])
    vocab = (tok.get("model") or {}).get("vocab")
    if isinstance(vocab, dict) and content in vocab:
        return int(vocab[content])
    return None


def write_tokenizer_config(out_dir: str, tok: dict, bos: int | None, eos: int | None, add_bos: bool,
                           chat_template: str | None) -> None:
    """The second argument of `new Tokenizer(json, config)` in @huggingface/tokenizers."""
    inv = {a["id"]: a["content"] for a in tok.get("added_tokens", [])}
    cfg = {
        "add_bos_token": add_bos, "add_eos_token": False,
        "bos_token": inv.get(bos), "eos_token": inv.get(eos), "unk_token": inv.get(0),
        "clean_up_tokenization_spaces": False, "legacy": False,
        "model_max_length": None, "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if chat_template:
        cfg["chat_template"] = chat_template
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)


def write_package(out_dir: str, model: Llama, tokenizer_json, name: str, provenance: dict, license: str,
                  eval: dict, variants=("fp32", "int8"), default: str = "int8", *, family: str | None = None,
                  chat_template: str | None = None, bos_id: int | None = None, eos_id: int | None = None,
                  add_bos: bool = True, fine_tuned: dict | None = None, log=print) -> dict:
    """Export `model` into `out_dir` and return the manifest written there.

    tokenizer_json: path to a tokenizer.json, or its parsed dict. Fold any training-only prefix
    reparameterisation into model.prefix before calling. fine_tuned: the checkpoint's record of a
    base trained here (bitatool.mask_aware), written as the manifest's "fine_tuned".
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or default not in variants:
        raise ValueError(f"variants {list(variants)} / default {default!r}: known are {list(VARIANTS)}")
    os.makedirs(out_dir, exist_ok=True)
    c = model.c
    tok = tokenizer_json
    if isinstance(tok, str):
        with open(tok, encoding="utf-8") as f:
            tok = json.load(f)
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    bos = bos_id if bos_id is not None else _token_id(tok, "<s>")
    eos = eos_id if eos_id is not None else _token_id(tok, "</s>")
    write_tokenizer_config(out_dir, tok, bos, eos, add_bos, chat_template)

    graphs: dict = {"default": default}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = os.path.join(tmp, VARIANTS["fp32"][0])
        log(f"[package] exporting fp32 graph ({sum(p.numel() for p in model.parameters())} parameters)")
        export_onnx(model, fp32)
        for v in variants:
            fname = VARIANTS[v][0]
            dst = os.path.join(out_dir, fname)
            if v == "fp32":
                shutil.copyfile(fp32, dst)
            elif v == "int8":
                log("[package] quantising int8")
                quantize_int8(fp32, dst)
            elif v == "int8w":
                log("[package] int8 storage (fp32 compute)")
                quantize_int8(fp32, dst, compute="fp32")
            elif v == "int4":
                log("[package] quantising 4-bit")
                quantize_4bit(fp32, dst)
            graphs[v] = fname
    for stale in {f for f, _ in VARIANTS.values()} - set(graphs.values()):
        if os.path.exists(os.path.join(out_dir, stale)):
            os.remove(os.path.join(out_dir, stale))

    arch = c.to_dict()
    arch["family"] = family or ("qwen2" if c.qkv_bias else "llama")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "architecture": arch,
        "bita": ({"mask_token_ids": [c.vocab_size + j for j in range(c.n_masks)], "prefix_slots": c.n_prefix}
                 if c.n_masks else None),
        "tokenizer": {"file": "tokenizer.json", "config": "tokenizer_config.json",
                      "bos_id": bos, "eos_id": eos, "add_bos": add_bos},
        "chat_template": chat_template,
        "graphs": graphs,
        "quantization": {v: VARIANTS[v][1] for v in variants},
        "io": graph_io(),
        "files": {},
        "provenance": provenance,
        "license": license,
        "eval": eval,
    }
    if fine_tuned:
        manifest["fine_tuned"] = fine_tuned  # the base weights changed: from what, and how far
    for fname in sorted(["tokenizer.json", "tokenizer_config.json"] + [graphs[v] for v in variants]):
        manifest["files"][fname] = file_entry(os.path.join(out_dir, fname))
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    log(f"[package] wrote {out_dir}: " + ", ".join(f"{k} {v['bytes']} B" for k, v in manifest["files"].items()))
    return manifest
