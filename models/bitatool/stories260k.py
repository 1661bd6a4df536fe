"""Recipe: stories260K (llama2.c, a public model this project did not train) + the committed BiTA
adapters -> a package in models/stories260K-bita/package/ (git-ignored), used by tests and benches.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time

from .evalbpb import bits_per_byte, held_out_text
from .llama2c import load_llama2c
from .loaders import attach_adapters
from .ngram import attach as ngram_attach
from .orteval import add_ort_eval, held_out_sequences
from .package import file_entry, write_package
from .tokenizer import sentencepiece_to_tokenizer_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_SHARED = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
DEFAULT_OUT = os.path.join(REPO, "models", "stories260K-bita", "package")
DEFAULT_ADAPTERS = os.path.join(REPO, "models", "stories260K-bita", "adapters.pt")
# n-gram draft table counted on stories260K's own greedy output (`bitatool ngram --model stories260k`).
DEFAULT_NGRAM = os.path.join(REPO, "models", "stories260K-bita", "ngram.bin")


def _sha(path: str) -> str:
    return file_entry(path)["sha256"]


def build(shared: str = DEFAULT_SHARED, out: str = DEFAULT_OUT, adapters: str | None = DEFAULT_ADAPTERS,
          variants=("fp32", "int8", "int8w", "int4"), measure: bool = True, log=print) -> dict:
    t0 = time.time()
    st = os.path.join(shared, "models", "stories260K")
    ckpt, spm_path = os.path.join(st, "stories260K.bin"), os.path.join(st, "tok512.model")
    log(f"[stories260k] importing {ckpt}")
    model = load_llama2c(ckpt)
    extra: dict = {}
    if adapters and os.path.exists(adapters):
        extra = attach_adapters(model, adapters, log=log)
    else:
        bar = "!" * 78
        print(f"{bar}\n!! NO BiTA ADAPTERS at {adapters}: building a plain package (bita: null).\n"
              f"!! The engine will decode without mask drafts. Train and commit adapters.pt.\n{bar}",
              file=sys.stderr)
    os.makedirs(out, exist_ok=True)
    tok_path = os.path.join(out, "tokenizer.json")
    tok = sentencepiece_to_tokenizer_json(spm_path, tok_path)

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=spm_path)
    text_path = os.path.join(shared, "text", "tinystories_val_subset.txt")
    held = held_out_text(text_path)
    ev: dict = {"held_out": "last 10% of tinystories_val_subset.txt, cut at a blank line"}
    if measure:
        log("[stories260k] bits per byte on held-out text (fp32, torch)")
        ev["bpb_heldout"] = round(bits_per_byte(model, sp, held, log=log), 4)
    for k in ("mask_top1", "mask_top5", "mask_topk", "eval"):
        if k in extra:
            ev[k if k != "eval" else "adapters"] = extra[k]
    provenance = {
        "base_model": {"name": "stories260K (karpathy/tinyllamas, llama2.c legacy v0 .bin)",
                       "file": "stories260K.bin", "sha256": _sha(ckpt),
                       "source": "../shared/data/models/stories260K (see its PROVENANCE.md)"},
        "tokenizer": {"file": "tok512.model", "sha256": _sha(spm_path), "converted_by": "bitatool.tokenizer"},
        "adapters": ({"file": os.path.relpath(adapters, REPO), "sha256": _sha(adapters),
                      "training": {k: v for k, v in extra.items() if k not in ("eval",)}}
                     if adapters and os.path.exists(adapters) else None),
        "built_by": "python3 -m bitatool stories260k",
        "training_data_license": "TinyStories: CDLA-Sharing-1.0",
    }
    # int8w: same speed as int8 on a model this small, closer to fp32, and exactly the function of
    # fake_quant_int8 (what the adapters' self-distilled data can be generated with).
    default = next(v for v in ("int8w", "int8", "fp32", *variants) if v in variants)
    manifest = write_package(out, model, tok, "stories260K-bita", provenance, "MIT", ev, variants=variants,
                             default=default, log=log)
    if os.path.exists(DEFAULT_NGRAM):
        ngram_attach(out, DEFAULT_NGRAM, log=log)
    if measure:
        log("[stories260k] onnxruntime: greedy agreement of quantised graphs vs fp32 on held-out text")
        new_eval = add_ort_eval(out, held_out_sequences(sp, held), log=log)
        if new_eval is not None:
            manifest["eval"] = new_eval
    log(f"[stories260k] done in {time.time() - t0:.1f} s: {out}")
    log(json.dumps(manifest["eval"], indent=1))
    return manifest
