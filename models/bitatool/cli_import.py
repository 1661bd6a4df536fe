"""CLI commands: import, tokenizer conversion, export, quantisation, packaging, bits per byte."""
from __future__ import annotations

import json
import os
import time

from .options import HelpFormatter, ranged
from .outputs import add_force, check_package_dir


def log(msg: str) -> None:
    print(msg, flush=True)


def _threads() -> None:
    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))  # Debian's torch defaults to 1


def cmd_import_llama2c(a) -> int:
    from .checkpoint import save_model
    from .llama2c import load_llama2c
    from .tokenizer import llama2c_tokenizer_to_json

    m = load_llama2c(a.checkpoint, max_positions=a.max_positions)
    save_model(m, a.out, {"source": os.path.abspath(a.checkpoint), "format": "llama2c"})
    log(f"[import] {a.checkpoint} -> {a.out} ({sum(p.numel() for p in m.parameters())} parameters, "
        f"{json.dumps(m.c.to_dict())})")
    if a.tokenizer:
        out = a.tokenizer_out or os.path.join(os.path.dirname(os.path.abspath(a.out)), "tokenizer.json")
        llama2c_tokenizer_to_json(a.tokenizer, out)
        log(f"[import] {a.tokenizer} -> {out}")
    return 0


def cmd_import_hf(a) -> int:
    from .checkpoint import save_model
    from .hf import load_hf

    tok_out = a.tokenizer_out or os.path.join(os.path.dirname(os.path.abspath(a.out)), "tokenizer.json")
    m, tok = load_hf(a.folder, max_positions=a.max_positions, tokenizer_out=tok_out, log=log)
    save_model(m, a.out, {"source": os.path.abspath(a.folder), "format": "huggingface"})
    log(f"[import] {a.folder} -> {a.out}; tokenizer: {tok or 'none found'}")
    return 0


def cmd_convert_tokenizer(a) -> int:
    from .tokenizer import llama2c_tokenizer_to_json, sentencepiece_to_tokenizer_json

    if a.source.endswith(".bin"):
        tok = llama2c_tokenizer_to_json(a.source, a.out)
    else:
        tok = sentencepiece_to_tokenizer_json(a.source, a.out)
    log(f"[tokenizer] {a.source} -> {a.out}: {len(tok['model']['vocab'])} pieces, {len(tok['model']['merges'])} merges")
    return 0


def cmd_export(a) -> int:
    from .export import export_onnx
    from .loaders import attach_adapters, load_any

    _threads()
    m = load_any(a.model, log=log)
    if a.adapters:
        attach_adapters(m, a.adapters, log=log)
    t0 = time.time()
    export_onnx(m, a.out)
    log(f"[export] {a.out}: {os.path.getsize(a.out)} bytes in {time.time() - t0:.1f} s")
    return 0


def cmd_quantize(a) -> int:
    from .quantize import quantize_4bit, quantize_int8

    (quantize_int8 if a.bits == 8 else quantize_4bit)(a.src, a.out)
    log(f"[quantize] {a.src} ({os.path.getsize(a.src)} B) -> {a.out} ({os.path.getsize(a.out)} B), {a.bits}-bit")
    return 0


def cmd_package(a) -> int:
    from .loaders import attach_adapters, load_any
    from .mask_aware import fine_tuned_of
    from .package import write_package

    check_package_dir(a.out, a.force)
    _threads()
    meta, tok = {}, a.tokenizer
    if os.path.isdir(a.model):  # HF folder: its tokenizer, special ids and chat template
        from .hf import load_hf, tokenizer_meta

        m, hf_tok = load_hf(a.model, log=log)
        meta, tok = tokenizer_meta(a.model), tok or hf_tok
    else:
        m = load_any(a.model, log=log)
    if not tok:
        raise SystemExit("package: --tokenizer is required (no tokenizer found with the model)")
    extra = attach_adapters(m, a.adapters, log=log) if a.adapters else {}
    prov = {"model": os.path.abspath(a.model), "adapters": a.adapters and os.path.abspath(a.adapters),
            "adapters_extra": extra or None}
    variants = tuple(a.variants.split(","))
    write_package(a.out, m, tok, a.name, prov, a.license, {}, variants=variants,
                  default=a.default or variants[-1], fine_tuned=fine_tuned_of(a.model), log=log, **meta)
    return 0


def cmd_bpb(a) -> int:
    import sentencepiece as spm

    from .evalbpb import bits_per_byte, held_out_text
    from .loaders import load_any
    from .stories260k import DEFAULT_SHARED

    _threads()
    shared = a.shared or DEFAULT_SHARED
    text_path = a.text or os.path.join(shared, "text", "tinystories_val_subset.txt")
    text = held_out_text(text_path) if not a.whole_file else open(text_path, encoding="utf-8").read()
    sp = spm.SentencePieceProcessor(model_file=a.tokenizer or os.path.join(shared, "models/stories260K/tok512.model"))
    paths = list(a.model or [])
    if not a.no_baseline:
        paths.append(os.path.join(shared, "models/stories260K/stories260K.bin"))
    rows = []
    for p in paths:
        t0 = time.time()
        m = load_any(p, log=log)
        bpb = bits_per_byte(m, sp, text, max_paragraphs=a.max_paragraphs, log=log)
        rows.append((p, bpb))
        log(f"[bpb] {p}: {bpb:.4f} bits/byte ({time.time() - t0:.1f} s)")
        if a.int8:
            from .quantize import fake_quant_int8

            q = bits_per_byte(fake_quant_int8(m), sp, text, max_paragraphs=a.max_paragraphs)
            log(f"[bpb] {p} (int8 weights, torch): {q:.4f} bits/byte")
    part = "whole file" if a.whole_file else "last 10%"
    if a.max_paragraphs:
        part += f", first {a.max_paragraphs} paragraphs"
    print(f"\nheld-out text: {text_path} ({part}; {len(text.encode('utf-8'))} bytes before any paragraph limit)")
    base = rows[-1][1] if not a.no_baseline else None
    for p, b in rows:
        rel = f"  ({(b / base - 1) * 100:+.1f}% vs stories260K)" if base and p != rows[-1][0] else ""
        print(f"{b:.4f} bits/byte  {p}{rel}")
    return 0


def cmd_stories260k(a) -> int:
    from .stories260k import DEFAULT_ADAPTERS, DEFAULT_OUT, DEFAULT_SHARED, build

    out = a.out or DEFAULT_OUT
    check_package_dir(out, a.force, own=DEFAULT_OUT)
    _threads()
    adapters = None if a.no_adapters else (a.adapters or DEFAULT_ADAPTERS)
    build(shared=a.shared or DEFAULT_SHARED, out=out, adapters=adapters,
          variants=tuple(a.variants.split(",")), measure=not a.fast, log=log)
    return 0


def register(sub) -> None:
    F = HelpFormatter
    p = sub.add_parser("import-llama2c", help="llama2.c .bin (legacy v0) -> bitatool checkpoint", formatter_class=F)
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="output .pt (bitatool.checkpoint)")
    p.add_argument("--tokenizer", help="llama2.c tokenizer.bin to convert alongside")
    p.add_argument("--tokenizer-out", help="tokenizer.json path (default: next to --out)")
    p.add_argument("--max-positions", type=ranged("max_positions", int),
                   help="cap the context (default: the checkpoint's seq_len)")
    p.set_defaults(func=cmd_import_llama2c)

    p = sub.add_parser("import-hf", help="Hugging Face folder (config.json, *.safetensors) -> checkpoint",
                       formatter_class=F)
    p.add_argument("folder")
    p.add_argument("--out", required=True, help="output .pt (bitatool.checkpoint)")
    p.add_argument("--tokenizer-out", help="where tokenizer.json goes, converted from tokenizer.model if needed "
                   "(default: next to --out)")
    p.add_argument("--max-positions", type=ranged("max_positions", int),
                   help="cap the context (default: max_position_embeddings)")
    p.set_defaults(func=cmd_import_hf)

    p = sub.add_parser("convert-tokenizer", help="sentencepiece .model or llama2.c .bin -> tokenizer.json",
                       formatter_class=F)
    p.add_argument("source")
    p.add_argument("--out", required=True, help="output tokenizer.json")
    p.set_defaults(func=cmd_convert_tokenizer)

    p = sub.add_parser("export", help="model (.pt, llama2.c .bin or HF folder) -> fp32 ONNX graph", formatter_class=F)
    p.add_argument("model")
    p.add_argument("--adapters", help="BiTA adapters to attach (checkpoint or adapter-only file)")
    p.add_argument("--out", required=True, help="output .onnx")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quantize", help="fp32 graph -> weight-only int8 or 4-bit graph", formatter_class=F)
    p.add_argument("src")
    p.add_argument("--out", required=True, help="output .onnx")
    p.add_argument("--bits", type=int, choices=(8, 4), default=8, help="8: int8 per output column; 4: blocks of 32")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("package", help="model + tokenizer.json -> package folder (docs/package-format.md)",
                       formatter_class=F)
    p.add_argument("model")
    p.add_argument("--tokenizer", help="tokenizer.json (default: the HF folder's own)")
    p.add_argument("--adapters", help="BiTA adapters to attach (checkpoint or adapter-only file)")
    p.add_argument("--out", required=True, help="package folder: new or empty, unless --force")
    add_force(p, "the package files in a non-empty --out folder (one being served, too)")
    p.add_argument("--name", required=True, help="the manifest's name")
    p.add_argument("--license", default="MIT", help="the manifest's license")
    p.add_argument("--variants", default="fp32,int8", help="comma-separated graphs: fp32, int8, int8w, int4")
    p.add_argument("--default", help="variant served by default (default: the last one)")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("bpb", help="bits per byte on held-out TinyStories text, next to stories260K's",
                       formatter_class=F)
    p.add_argument("model", nargs="*", help=".pt checkpoint, llama2.c .bin or HF folder")
    p.add_argument("--tokenizer", help="sentencepiece .model (default: stories260K's tok512.model)")
    p.add_argument("--text", help="text file (default: shared tinystories_val_subset.txt)")
    p.add_argument("--whole-file", action="store_true", help="score the whole file, not its held-out last 10%%")
    p.add_argument("--max-paragraphs", type=ranged("max_paragraphs", int),
                   help="score only the first N paragraphs (default: all)")
    p.add_argument("--int8", action="store_true", help="also score int8-rounded weights (torch)")
    p.add_argument("--no-baseline", action="store_true", help="do not add stories260K")
    p.add_argument("--shared", help="shared data folder (default: ../shared/data)")
    p.set_defaults(func=cmd_bpb)

    p = sub.add_parser("stories260k", help="build stories260K's BiTA package into models/stories260K-bita/package",
                       formatter_class=F)
    p.add_argument("--shared", help="shared data folder (default: ../shared/data)")
    p.add_argument("--out", help="package folder; another than the default must be new or empty, unless --force "
                   "(default: models/stories260K-bita/package, rebuilt in place)")
    add_force(p, "the package files in a non-empty --out folder")
    p.add_argument("--adapters", help="adapters file (default: models/stories260K-bita/adapters.pt)")
    p.add_argument("--no-adapters", action="store_true", help="build a plain package")
    p.add_argument("--variants", default="fp32,int8,int8w,int4", help="comma-separated graphs")
    p.add_argument("--fast", action="store_true", help="skip bits-per-byte and onnxruntime measurements")
    p.set_defaults(func=cmd_stories260k)
