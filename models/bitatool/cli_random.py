"""`random-graph`: a LLaMA-family graph with random (seeded) weights and random BiTA adapters, for
step-cost projections of models larger than the bundled one (bitad issue 8).

The graph is exported by the same path as a real package (export.export_onnx, then the quantizer),
so it has the engine's exact interface: input_ids, position_ids, attention_bias, past/new K/V and
in-graph prefix K/V for mask rows. Its manifest carries real architecture, bita, io and graphs
blocks, "random_weights": true and the parameter count, but NO tokenizer: its text is noise, so it
is a graph for timing only. The package loader requires a tokenizer and refuses it on purpose; a
benchmark opens the graph with src/engine/ort.ts openSession and builds OrtTreeModel directly.
"""
from __future__ import annotations

import json
import math
import os
import time

from .options import HelpFormatter, ranged
from .outputs import add_force, check_package_dir

INIT_STD = 0.02  # GPT-2/LLaMA-style init: keeps activations and logits O(1), hence finite


def log(msg: str) -> None:
    print(msg, flush=True)


def random_model(a):
    """The model of the requested shape: seeded normal init, then random adapters (add_bita)."""
    import torch

    from .model import Config, Llama

    if a.dim % a.heads or a.heads % a.kv_heads:
        raise SystemExit(f"random-graph: dim {a.dim} must divide by heads {a.heads}, heads by kv-heads {a.kv_heads}")
    c = Config(dim=a.dim, n_layers=a.layers, n_heads=a.heads, n_kv_heads=a.kv_heads, hidden_dim=a.hidden,
               vocab_size=a.vocab, max_positions=a.max_positions)
    torch.manual_seed(a.seed)  # module construction draws from the global generator too
    m = Llama(c)
    _init_weights(m, torch.Generator().manual_seed(a.seed))
    if a.masks or a.prefix:
        m.add_bita(a.masks, a.prefix, seed=a.seed + 1)
    return m.eval()


def _init_weights(m, g) -> None:
    """Normal(0, 0.02) for embeddings and projections; the two projections that write into the
    residual stream (wo, w2) are scaled by 1/sqrt(2·layers) so the stream does not grow with depth.
    RMSNorm weights stay 1."""
    import torch

    resid_std = INIT_STD / math.sqrt(2 * m.c.n_layers)
    with torch.no_grad():
        m.tok_embeddings.weight.normal_(0.0, INIT_STD, generator=g)
        for layer in m.layers:
            for lin in (layer.attention.wq, layer.attention.wk, layer.attention.wv,
                        layer.feed_forward.w1, layer.feed_forward.w3):
                lin.weight.normal_(0.0, INIT_STD, generator=g)
            layer.attention.wo.weight.normal_(0.0, resid_std, generator=g)
            layer.feed_forward.w2.weight.normal_(0.0, resid_std, generator=g)


def count_parameters(m) -> dict:
    """Base (what a real checkpoint of this shape would have) and adapters, separately."""
    adapters = {"mask_embeddings", "prefix"}
    base = sum(p.numel() for n, p in m.named_parameters() if n not in adapters)
    extra = sum(p.numel() for n, p in m.named_parameters() if n in adapters)
    emb = m.tok_embeddings.weight.numel()
    return {"total": base + extra, "base": base, "adapters": extra, "embedding": emb,
            "non_embedding": base - emb}


def export_graphs(m, out: str, variants: list[str], keep_fp32: bool) -> dict:
    """fp32 graph first (every variant is quantised from it), then each requested variant.
    Returns the manifest's graphs block (the first requested variant is the default)."""
    from .export import export_onnx
    from .package import VARIANTS
    from .quantize import quantize_4bit, quantize_int8

    fp32 = os.path.join(out, VARIANTS["fp32"][0])
    t0 = time.time()
    log(f"[random-graph] exporting the fp32 graph (torch.onnx trace + post-processing) -> {fp32}")
    export_onnx(m, fp32)
    log(f"[random-graph]   fp32: {os.path.getsize(fp32) / 1e6:.1f} MB in {time.time() - t0:.1f} s")
    quantizers = {"int8": lambda s, d: quantize_int8(s, d), "int8w": lambda s, d: quantize_int8(s, d, compute="fp32"),
                  "int4": quantize_4bit}
    graphs = {"default": variants[0]}
    for v in variants:
        fname = VARIANTS[v][0]
        if v != "fp32":
            t0 = time.time()
            log(f"[random-graph] quantising {v} -> {fname}")
            quantizers[v](fp32, os.path.join(out, fname))
            log(f"[random-graph]   {v}: {os.path.getsize(os.path.join(out, fname)) / 1e6:.1f} MB "
                f"in {time.time() - t0:.1f} s")
        graphs[v] = fname
    if keep_fp32:
        graphs.setdefault("fp32", VARIANTS["fp32"][0])
    elif "fp32" not in graphs:
        os.remove(fp32)
    return graphs


def write_manifest(out: str, m, graphs: dict, params: dict, a, export_s: float) -> dict:
    """The package-format manifest with the engine-relevant blocks real; no tokenizer."""
    from .package import FORMAT, FORMAT_VERSION, VARIANTS, file_entry, graph_io

    c = m.c
    arch = c.to_dict()
    arch["family"] = "llama"
    variants = [v for v in graphs if v != "default"]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": a.name or f"random-{params['total'] / 1e6:.3g}m",
        "random_weights": True,
        "timing_only": ("random weights and random BiTA adapters; no tokenizer: a graph for step-cost "
                        "timing only. The package loader refuses it (no tokenizer); open the graph with "
                        "src/engine/ort.ts openSession and build OrtTreeModel from this manifest."),
        "parameters": params,
        "architecture": arch,
        "bita": ({"mask_token_ids": [c.vocab_size + j for j in range(c.n_masks)], "prefix_slots": c.n_prefix}
                 if c.n_masks else None),
        "tokenizer": None,
        "chat_template": None,
        "graphs": graphs,
        "quantization": {v: VARIANTS[v][1] for v in variants},
        "io": graph_io(),
        "files": {graphs[v]: file_entry(os.path.join(out, graphs[v])) for v in sorted(variants)},
        "provenance": {"built_by": "python3 -m bitatool random-graph", "seed": a.seed,
                       "init": f"normal(0, {INIT_STD}); wo and w2 scaled by 1/sqrt(2*layers); "
                               "adapters: Llama.add_bita (mask rows at the embedding's std, prefix 0.02)",
                       "export_seconds": round(export_s, 1)},
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


def run(a) -> int:
    import torch

    from .package import VARIANTS

    check_package_dir(a.out, a.force)
    torch.set_num_threads(a.threads)  # Debian's torch defaults to 1
    variants = [v for v in a.variant.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise SystemExit(f"random-graph: unknown variant(s) {unknown}; known are {list(VARIANTS)}")
    t0 = time.time()
    m = random_model(a)
    params = count_parameters(m)
    log(f"[random-graph] {params['total']:,} parameters ({params['total'] / 1e6:.2f} M: base {params['base']:,}, "
        f"of which embedding {params['embedding']:,}; adapters {params['adapters']:,})")
    os.makedirs(a.out, exist_ok=True)
    graphs = export_graphs(m, a.out, variants, keep_fp32=not a.no_fp32)
    export_s = time.time() - t0
    manifest = write_manifest(a.out, m, graphs, params, a, export_s)
    sizes = ", ".join(f"{f} {e['bytes'] / 1e6:.1f} MB" for f, e in manifest["files"].items())
    log(f"[random-graph] wrote {a.out} in {export_s:.1f} s: {sizes}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("random-graph", help="random-weight LLaMA graph with random BiTA adapters (timing only)",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", required=True, help="output folder (graphs + manifest.json), new or empty unless "
                   "--force; never commit it")
    add_force(p, "the files in a non-empty --out folder")
    p.add_argument("--dim", type=ranged("dim", int), default=512, help="model width")
    p.add_argument("--layers", type=ranged("layers", int), default=8, help="transformer layers")
    p.add_argument("--heads", type=ranged("heads", int), default=8, help="attention heads")
    p.add_argument("--kv-heads", type=ranged("kv_heads", int), default=4, help="key/value heads (grouped-query)")
    p.add_argument("--hidden", type=ranged("hidden", int), default=1376, help="SwiGLU hidden width")
    p.add_argument("--vocab", type=ranged("vocab", int), default=32000, help="vocabulary size")
    p.add_argument("--max-positions", type=ranged("max_positions", int), default=512, help="context length")
    p.add_argument("--masks", type=ranged("masks", int), default=3, help="BiTA mask tokens M")
    p.add_argument("--prefix", type=ranged("prefix", int), default=16, help="BiTA prefix slots P per layer")
    p.add_argument("--seed", type=int, default=0, help="weights (the adapters use seed + 1)")
    p.add_argument("--variant", default="int8w",
                   help="comma-separated graph variants (fp32, int8, int8w, int4); the first is the default")
    p.add_argument("--no-fp32", action="store_true", help="do not keep the fp32 graph the variants come from")
    p.add_argument("--name", help="manifest name (default: random-<N>m)")
    p.add_argument("--threads", type=ranged("threads", int), default=2, help="torch threads")
    p.set_defaults(func=run)
