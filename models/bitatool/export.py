"""Export a model to the one-graph ONNX contract of docs/package-format.md.

The graph is model.forward traced with torch's exporter (works on Debian's torch 1.13), then
post-processed with plain onnx:
- the tied LM head reads the embedding initializer itself (Gemm transB=1) instead of the
  transposed copy the exporter constant-folds (that copy would double the embedding's bytes);
- initializer names are made stable and readable (quantize.py finds weights by graph structure,
  not by name, but people reading the graph benefit).
"""
from __future__ import annotations

import inspect
import io
import math
import os
import warnings

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from .model import NEG, Llama

OPSET = 14
IO_NAMES = {
    "inputs": ["input_ids", "position_ids", "attention_bias"],
    "past_key": "past_key_{i}", "past_value": "past_value_{i}",
    "logits": "logits",
    "new_key": "new_key_{i}", "new_value": "new_value_{i}",
}


class _Graph(torch.nn.Module):
    """model.forward itself, flat arguments (the exporter needs tensors, not lists of tuples)."""

    def __init__(self, model: Llama):
        super().__init__()
        self.m = model

    def forward(self, input_ids, position_ids, attention_bias, *past):
        n = self.m.c.n_layers
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(n)]
        logits, new = self.m(input_ids, position_ids, attention_bias, pairs)
        out = [logits]
        for k, v in new:
            out += [k, v]
        return tuple(out)


class _Rotary(torch.autograd.Function):
    """Rotate-half RoPE from cached cos/sin tables; exported as one com.microsoft.RotaryEmbedding
    node (instead of ~6 per projection). The tables hold cos/sin(float32(p) * inv_freq) exactly as
    model.rope computes them."""

    @staticmethod
    def forward(ctx, x, pos, cos_cache, sin_cache, num_heads: int):
        b, q, hd = x.shape
        d = hd // num_heads
        t = x.view(b, q, num_heads, d)
        cos = torch.cat([cos_cache[pos], cos_cache[pos]], -1).unsqueeze(2)  # [B, Q, 1, D]
        sin = torch.cat([sin_cache[pos], sin_cache[pos]], -1).unsqueeze(2)
        half = d // 2
        return (t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin).reshape(b, q, hd)

    @staticmethod
    def symbolic(g, x, pos, cos_cache, sin_cache, num_heads):
        return g.op("com.microsoft::RotaryEmbedding", x, pos, cos_cache, sin_cache, interleaved_i=0,
                    num_heads_i=num_heads)


class _LeanGraph(_Graph):
    """The same function as model.forward (tests hold it to 1e-4), written for a small ONNX graph:
    batch fixed at 1 and -1 for the one dynamic axis, so reshapes need no Shape/Gather/Concat
    chains; the rotary tables and the prefix bias are built once, not per layer; GQA groups the
    query heads of each KV head ([1, KVH, rep, Q, D] against [1, KVH, 1, D, T]) instead of copying
    K/V rep times. On a 260K-parameter model ORT's per-node cost dominates a step, so node count
    is speed. Reuses the model's own modules (norms, projections, FFN, embedding, prefix_kv)."""

    def forward(self, input_ids, position_ids, attention_bias, *past):
        m, c = self.m, self.m.c
        H, KVH, D = c.n_heads, c.n_kv_heads, c.head_dim
        rep = H // KVH
        x = m.embed(input_ids)  # [1, Q, dim]
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
        ang = torch.arange(c.max_positions, dtype=torch.float32).unsqueeze(-1) * inv  # [max_pos, D/2]
        cos_cache, sin_cache = ang.cos(), ang.sin()

        bias = attention_bias.unsqueeze(1)  # [1, 1, 1, Q, T]
        pkv = m.prefix_kv()
        if pkv is not None:
            is_mask = (input_ids >= c.vocab_size).view(1, 1, 1, -1, 1)
            P = pkv[0][0].shape[1]
            pbias = torch.where(is_mask, torch.zeros(1, 1, 1, 1, P), torch.full((1, 1, 1, 1, P), NEG))
        scale = 1.0 / math.sqrt(D)
        out = []
        for i, layer in enumerate(m.layers):
            at = layer.attention
            h = layer.attention_norm(x)
            q = _Rotary.apply(at.wq(h), position_ids, cos_cache, sin_cache, H).view(1, -1, H, D)
            k = _Rotary.apply(at.wk(h), position_ids, cos_cache, sin_cache, KVH).view(1, -1, KVH, D)
            v = at.wv(h).view(1, -1, KVH, D)
            keys = torch.cat([past[2 * i], k], 1)  # [1, T, KVH, D]
            vals = torch.cat([past[2 * i + 1], v], 1)
            qg = q.transpose(1, 2).reshape(1, KVH, rep, -1, D)  # head h = kv * rep + r
            kt = keys.permute(0, 2, 3, 1).unsqueeze(2)  # [1, KVH, 1, D, T]
            vg = vals.transpose(1, 2).unsqueeze(2)  # [1, KVH, 1, T, D]
            scores = torch.matmul(qg, kt) * scale + bias  # [1, KVH, rep, Q, T]
            if pkv is not None:
                pk, pv = pkv[i]  # [KVH, P, D], never rotated
                ps = torch.matmul(qg, pk.transpose(1, 2).unsqueeze(1).unsqueeze(0)) * scale + pbias
                probs = torch.softmax(torch.cat([ps, scores], -1), -1)
                o = torch.matmul(probs[..., :P], pv.unsqueeze(1).unsqueeze(0)) + torch.matmul(probs[..., P:], vg)
            else:
                o = torch.matmul(torch.softmax(scores, -1), vg)  # [1, KVH, rep, Q, D]
            o = o.reshape(1, H, -1, D).transpose(1, 2).reshape(1, -1, H * D)
            x = x + at.wo(o)
            x = x + layer.feed_forward(layer.ffn_norm(x))
            out += [k, v]
        return (m.lm_head(m.norm(x)), *out)


def io_names(n_layers: int) -> tuple[list[str], list[str]]:
    ins = list(IO_NAMES["inputs"])
    outs = ["logits"]
    for i in range(n_layers):
        ins += [f"past_key_{i}", f"past_value_{i}"]
        outs += [f"new_key_{i}", f"new_value_{i}"]
    return ins, outs


def _dummy_inputs(model: Llama, q: int = 3, past: int = 2):
    c = model.c
    ids = torch.arange(q, dtype=torch.int64).view(1, q) % c.vocab_size
    pos = (torch.arange(q, dtype=torch.int64) + past).view(1, q)
    bias = torch.zeros(1, 1, q, past + q)
    pk = [torch.zeros(1, past, c.n_kv_heads, c.head_dim) for _ in range(2 * c.n_layers)]
    return (ids, pos, bias, *pk)


def _legacy_exporter() -> dict:
    """Newer torch (2.9+) defaults to the dynamo exporter; this module is written for the
    TorchScript one that Debian's torch 1.13 has, so ask for it where the choice exists."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def export_onnx(model: Llama, path: str, lean: bool = True) -> None:
    """Write the fp32 graph. Fold any training-only reparameterisation into model.prefix first.
    lean=False traces model.forward itself (a bigger graph; for checking the lean one)."""
    model = model.eval()
    c = model.c
    ins, outs = io_names(c.n_layers)
    dyn = {"input_ids": {1: "q"}, "position_ids": {1: "q"}, "attention_bias": {2: "q", 3: "total"},
           "logits": {1: "q"}}
    for i in range(c.n_layers):
        for nm in (f"past_key_{i}", f"past_value_{i}"):
            dyn[nm] = {1: "past"}
        for nm in (f"new_key_{i}", f"new_value_{i}"):
            dyn[nm] = {1: "q"}
    buf = io.BytesIO()
    # TracerWarnings about shape checks are expected: those branches are fixed per model.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export((_LeanGraph if lean else _Graph)(model), _dummy_inputs(model), buf, input_names=ins,
                          output_names=outs, dynamic_axes=dyn, opset_version=OPSET, do_constant_folding=True,
                          custom_opsets={"com.microsoft": 1},
                          **_legacy_exporter())
    g = onnx.load_from_string(buf.getvalue())
    _name_weights(g, model)
    if c.tied_embedding:
        _share_tied_head(g, model)
    _drop_unused_initializers(g)
    g.producer_name = "bitatool"
    onnx.checker.check_model(g)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    onnx.save(g, path)


def _rename(g: onnx.ModelProto, old: str, new: str) -> None:
    if old == new:
        return
    for init in g.graph.initializer:
        if init.name == old:
            init.name = new
    for node in g.graph.node:
        for j, x in enumerate(node.input):
            if x == old:
                node.input[j] = new


def _name_weights(g: onnx.ModelProto, model: Llama) -> None:
    """Give initializers that equal a model parameter (or its transpose) the parameter's name."""
    params = {}
    for name, p in model.named_parameters():
        a = p.detach().numpy()
        params.setdefault((a.shape, a.tobytes()), name)
        if a.ndim == 2:
            t = np.ascontiguousarray(a.T)
            params.setdefault((t.shape, t.tobytes()), name + ".T")
    pkv = model.prefix_kv()
    for i, (pk, pv) in enumerate(pkv or []):  # as _LeanGraph folds them: [1, KVH, 1, D, P] / [1, KVH, 1, P, D]
        for name, a in ((f"prefix_key_{i}", pk.detach().transpose(1, 2).unsqueeze(1).unsqueeze(0)),
                        (f"prefix_value_{i}", pv.detach().unsqueeze(1).unsqueeze(0))):
            a = np.ascontiguousarray(a.numpy())
            params.setdefault((a.shape, a.tobytes()), name)
    taken = set()
    for init in list(g.graph.initializer):
        a = numpy_helper.to_array(init)
        name = params.get((a.shape, a.tobytes()))
        if name and name not in taken:
            taken.add(name)
            _rename(g, init.name, name)


def _producer(g: onnx.ModelProto, name: str):
    for node in g.graph.node:
        if name in node.output:
            return node
    return None


def _share_tied_head(g: onnx.ModelProto, model: Llama) -> None:
    """Replace MatMul(h, E^T initializer) by Reshape→Gemm(transB=1, B=E)→Reshape on the embedding."""
    emb = model.tok_embeddings.weight.detach().numpy()
    inits = {i.name: i for i in g.graph.initializer}
    emb_name = next((n for n, i in inits.items() if i.dims == list(emb.shape)
                     and np.array_equal(numpy_helper.to_array(i), emb)), None)
    if emb_name is None:
        raise RuntimeError("tied export: embedding initializer not found")
    logits_node = _producer(g, "logits")
    if logits_node is None or logits_node.op_type != "MatMul":
        raise RuntimeError(f"tied export: logits come from {logits_node and logits_node.op_type}, not MatMul")
    wt = logits_node.input[1]
    if wt in inits:
        if not np.array_equal(numpy_helper.to_array(inits[wt]), emb.T):
            raise RuntimeError("tied export: LM head weight is not the embedding's transpose")
    else:  # an unfolded Transpose(E) node also works, but make it explicit
        tnode = _producer(g, wt)
        if tnode is None or tnode.op_type != "Transpose" or tnode.input[0] != emb_name:
            raise RuntimeError("tied export: LM head weight not recognised")
    h = logits_node.input[0]
    d, v = emb.shape[1], emb.shape[0]
    g.graph.initializer.extend([
        numpy_helper.from_array(np.array([-1, d], dtype=np.int64), "lm_head.shape_in"),
        numpy_helper.from_array(np.array([1, -1, v], dtype=np.int64), "lm_head.shape_out"),
    ])
    new_nodes = [
        helper.make_node("Reshape", [h, "lm_head.shape_in"], ["lm_head.h2d"], name="lm_head.reshape_in"),
        helper.make_node("Gemm", ["lm_head.h2d", emb_name], ["lm_head.logits2d"], name="lm_head.gemm", transB=1),
        helper.make_node("Reshape", ["lm_head.logits2d", "lm_head.shape_out"], ["logits"], name="lm_head.reshape_out"),
    ]
    nodes = list(g.graph.node)
    idx = nodes.index(logits_node)
    del g.graph.node[:]
    g.graph.node.extend(nodes[:idx] + new_nodes + nodes[idx + 1 :])


def drop_unused_initializers(g: onnx.ModelProto) -> None:
    """Removes initializers that no node (subgraphs included) and no graph output reads."""
    used = set(o.name for o in g.graph.output)
    for node in g.graph.node:
        used.update(node.input)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                for sub in a.g.node:
                    used.update(sub.input)
    keep = [i for i in g.graph.initializer if i.name in used]
    del g.graph.initializer[:]
    g.graph.initializer.extend(keep)


def _drop_unused_initializers(g: onnx.ModelProto) -> None:
    drop_unused_initializers(g)
    # unused Transpose nodes feeding nothing
    changed = True
    while changed:
        changed = False
        used = set()
        for node in g.graph.node:
            used.update(node.input)
        used.update(o.name for o in g.graph.output)
        for node in list(g.graph.node):
            if not any(o in used for o in node.output):
                g.graph.node.remove(node)
                changed = True
    drop_unused_initializers(g)
