"""Write stories260K (+ random BiTA adapters) as fp32/int8 graphs and torch reference vectors.

usage: ort_vectors.py OUT_DIR [stories260K|aidreams260K]   (aidreams260K: plain multi-head attention)
OUT_DIR/model.onnx, OUT_DIR/model.int8.onnx and one case folder each (tensorio layout) holding
the graph inputs plus torch's outputs (logits, new_key_i, new_value_i):
  prefill  — past = 0: a prompt followed by one mask group (group 0)
  tree     — past = 7: bonus token, a 3-node draft tree and two mask groups (non-monotonic positions)
"""
import os
import sys

import torch

from bitatool.export import export_onnx
from bitatool.llama2c import load_llama2c
from bitatool.model import NEG
from bitatool.quantize import quantize_int8
from bitatool.tensorio import write_tensors

MODELS = os.path.join(os.path.dirname(__file__), "../../../../shared/data/models")
CKPT = {"stories260K": "stories260K/stories260K.bin", "aidreams260K": "aidreams260K/aidreams260K.bin"}


def tree_case(model, past_len: int):
    """Rows: (parent row or -1 for the root's context, is_mask). Returns ids, pos, bias."""
    V = model.c.vocab_size
    # row: (id, parent row index or None (= attached to the context), depth-ordered)
    rows = [
        (403, None),       # 0 bonus token b
        (261, 0),          # 1 node depth 1 (top-1)
        (378, 0),          # 2 node depth 1 (sibling)
        (432, 1),          # 3 node depth 2 below row 1
        (V + 0, 0), (V + 1, 4), (V + 2, 5),   # mask group attached to b (chain: each sees previous)
        (V + 0, 1), (V + 1, 7), (V + 2, 8),   # mask group attached to node 1
    ]
    q = len(rows)
    bias = torch.full((q, past_len + q), NEG)
    pos = torch.zeros(q, dtype=torch.int64)
    for r, (_, parent) in enumerate(rows):
        bias[r, :past_len] = 0.0
        anc, depth = r, 0
        while anc is not None:
            bias[r, past_len + anc] = 0.0
            anc = rows[anc][1]
            depth += 1
        pos[r] = past_len + depth - 1
    ids = torch.tensor([[i for i, _ in rows]], dtype=torch.int64)
    return ids, pos.view(1, q), bias.view(1, 1, q, past_len + q)


def save_case(model, out, ids, pos, bias, past):
    with torch.no_grad():
        logits, new = model(ids, pos, bias, past)
    t = {"input_ids": ids, "position_ids": pos, "attention_bias": bias, "logits": logits}
    for i in range(model.c.n_layers):
        pk, pv = past[i]
        t[f"past_key_{i}"], t[f"past_value_{i}"] = pk, pv
        t[f"new_key_{i}"], t[f"new_value_{i}"] = new[i]
    write_tensors(out, t)


def build_model(name="stories260K"):
    torch.manual_seed(0)
    m = load_llama2c(os.path.join(MODELS, CKPT[name]))
    m.add_bita(3, 16, seed=1)
    with torch.no_grad():  # adapters large enough that the prefix path changes mask logits a lot
        m.prefix.normal_(0, 0.5)
    return m


def main(out_dir, name="stories260K"):
    m = build_model(name)
    export_onnx(m, os.path.join(out_dir, "model.onnx"))
    quantize_int8(os.path.join(out_dir, "model.onnx"), os.path.join(out_dir, "model.int8.onnx"))
    c = m.c
    empty = [(torch.zeros(1, 0, c.n_kv_heads, c.head_dim), torch.zeros(1, 0, c.n_kv_heads, c.head_dim))
             for _ in range(c.n_layers)]
    # prefill: BOS + 5 prompt tokens + mask group 0 (mask j at position L + j, sees prompt + masks<=j)
    prompt = [1, 403, 407, 261, 378, 432]
    L = len(prompt)
    ids = torch.tensor([prompt + [c.vocab_size + j for j in range(3)]])
    pos = torch.tensor([list(range(L)) + [L + j for j in range(3)]])
    q = ids.shape[1]
    bias = torch.full((q, q), NEG)
    for r in range(q):
        bias[r, : min(r, L - 1) + 1] = 0.0
        if r >= L:
            bias[r, L : r + 1] = 0.0
    save_case(m, os.path.join(out_dir, "prefill"), ids, pos, bias.view(1, 1, q, q), empty)
    # tree step over a 7-row cache computed by the model itself
    ctx = torch.tensor([[1, 403, 407, 261, 378, 432, 383]])
    from bitatool.model import causal_bias
    with torch.no_grad():
        _, past = m(ctx, torch.arange(7).view(1, 7), causal_bias(7), None)
    ids, pos, bias = tree_case(m, 7)
    save_case(m, os.path.join(out_dir, "tree"), ids, pos, bias, past)


if __name__ == "__main__":
    main(*sys.argv[1:])
