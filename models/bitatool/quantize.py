"""Weight-only quantisation of an exported fp32 graph (onnx + numpy only; no onnxruntime needed).

int8: every MatMul with a constant 2-D weight becomes com.microsoft.DynamicQuantizeMatMul with a
symmetric int8 weight and one scale per output column (activations are quantised per tensor by ORT
at run time). A tied embedding is stored once, as int8 rows with one scale per row: the embedding
lookup gathers int8 rows and multiplies by their scales, and the LM head multiplies by the same
int8 table transposed (per-row scale of E == per-column scale of E^T), so nothing is duplicated.

4-bit: MatMul weights become com.microsoft.MatMulNBits (block 32, symmetric, accuracy_level 4).
The tied embedding is stored once in MatMulNBits layout ([V, blocks, 16] bytes == [V, dim/2]) and
the lookup uses com.microsoft.GatherBlockQuantized over the same bytes.

fake_quant_int8() applies exactly the int8 weight rounding to a torch copy of the model, so
self-distilled training data can come from "the quantised model".
"""
from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from .export import drop_unused_initializers
from .model import Llama

MS = "com.microsoft"
QMAX = 127.0


# --- shared rounding (numpy and torch must agree bit for bit) ------------------------------------

def int8_columns(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """b [K, N] float32 -> (q int8 [K, N], scale float32 [N]); q * scale ≈ b, per column."""
    b = b.astype(np.float32)
    scale = (np.abs(b).max(axis=0) / np.float32(QMAX)).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.round(b / scale), -QMAX, QMAX).astype(np.int8)
    return q, scale


def _fake_rows(w: torch.Tensor) -> torch.Tensor:
    """w [out, in]: same rounding as int8_columns(w.T), returned dequantised."""
    scale = w.abs().amax(dim=1) / QMAX
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.clamp(torch.round(w / scale[:, None]), -QMAX, QMAX)
    return q * scale[:, None]


def fake_quant_int8(model: Llama) -> Llama:
    """A copy whose Linear weights and token embedding are rounded exactly as in the int8 graph.
    (ORT also quantises activations per tensor at run time; that part is not simulated.)"""
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(_fake_rows(mod.weight))
        m.tok_embeddings.weight.copy_(_fake_rows(m.tok_embeddings.weight))
    return m


# --- graph helpers --------------------------------------------------------------------------------

def load_graph(src: str) -> onnx.ModelProto:
    """onnx.load, with a file that is not an ONNX model (text, a torch checkpoint, an empty file)
    reported as a ValueError naming it."""
    try:
        with warnings.catch_warnings():  # protobuf's RuntimeWarning on such bytes repeats the error
            warnings.simplefilter("ignore", RuntimeWarning)
            g = onnx.load(src)
    except DecodeError as e:
        raise ValueError(f"{src}: not an ONNX model ({e})") from e
    if not g.ir_version or not g.graph.node:  # protobuf reads an empty file as an empty model
        raise ValueError(f"{src}: not an ONNX model (no ir_version or no graph nodes)")
    return g


def _inits(g: onnx.ModelProto) -> dict:
    return {i.name: i for i in g.graph.initializer}


def _consumers(g: onnx.ModelProto, name: str) -> list:
    return [n for n in g.graph.node if name in n.input]


def _replace_init(g: onnx.ModelProto, name: str, arrays: dict) -> None:
    keep = [i for i in g.graph.initializer if i.name != name]
    del g.graph.initializer[:]
    g.graph.initializer.extend(keep)
    g.graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in arrays.items())


def _ensure_ms_opset(g: onnx.ModelProto) -> None:
    if not any(o.domain == MS for o in g.opset_import):
        g.opset_import.append(helper.make_opsetid(MS, 1))


def _splice(g: onnx.ModelProto, old, new_nodes: list) -> None:
    nodes = list(g.graph.node)
    i = nodes.index(old)
    del g.graph.node[:]
    g.graph.node.extend(nodes[:i] + new_nodes + nodes[i + 1 :])


def _tied_embedding(g: onnx.ModelProto):
    """(embedding name, gemm node) when export.py shared a tied head, else (None, None)."""
    for n in g.graph.node:
        if n.op_type == "Gemm" and n.name == "lm_head.gemm":
            return n.input[1], n
    return None, None


def _matmul_weights(g: onnx.ModelProto):
    inits = _inits(g)
    for n in list(g.graph.node):
        if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2:
            if inits[n.input[1]].data_type == onnx.TensorProto.FLOAT:
                yield n, numpy_helper.to_array(inits[n.input[1]])


def _finish(g: onnx.ModelProto, dst: str) -> None:
    _ensure_ms_opset(g)
    drop_unused_initializers(g)
    onnx.checker.check_model(g)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    onnx.save(g, dst)


# --- int8 -----------------------------------------------------------------------------------------

def quantize_int8(src: str, dst: str, compute: str = "int8") -> None:
    """compute="int8": DynamicQuantizeMatMul (int8 x uint8 GEMM, activations quantised per tensor at
    run time). compute="fp32": int8 storage only; Cast+Mul nodes rebuild the fp32 weights, which
    ORT constant-folds once at session start (file size of int8, speed and RAM of fp32, and the
    graph computes exactly fake_quant_int8's function)."""
    if compute == "fp32":
        return _quantize_int8_storage(src, dst)
    if compute != "int8":
        raise ValueError(f"compute must be 'int8' or 'fp32', not {compute!r}")
    g = load_graph(src)
    for n, b in list(_matmul_weights(g)):
        q, s = int8_columns(b)
        w = n.input[1]
        if len(_consumers(g, w)) != 1:
            continue  # shared weight: leave it fp32 rather than duplicate it
        _replace_init(g, w, {w + ".q8": q, w + ".scale": s})
        _splice(g, n, [helper.make_node("DynamicQuantizeMatMul", [n.input[0], w + ".q8", w + ".scale"],
                                        list(n.output), name=n.name + ".q8", domain=MS)])
    emb, gemm = _tied_embedding(g)
    if emb is not None:
        _quantize_tied_int8(g, emb, gemm)
    else:
        _quantize_gather_int8(g)
    _finish(g, dst)


def _gather_rows_int8(g, data_name: str, q_name: str, s_name: str, n) -> list:
    """Gather(E, idx) -> Gather(Eq, idx) * Gather(scale, idx)[..., None] (float32)."""
    idx, out, p = n.input[1], n.output[0], n.name or out
    return [
        helper.make_node("Gather", [q_name, idx], [p + ".q"], name=p + ".gq", axis=0),
        helper.make_node("Cast", [p + ".q"], [p + ".f"], name=p + ".cast", to=onnx.TensorProto.FLOAT),
        helper.make_node("Gather", [s_name, idx], [p + ".s"], name=p + ".gs", axis=0),
        helper.make_node("Unsqueeze", [p + ".s", "q8.axes_last"], [p + ".s1"], name=p + ".unsq"),
        helper.make_node("Mul", [p + ".f", p + ".s1"], [out], name=p + ".mul"),
    ]


def _embedding_gathers(g, emb: str) -> list:
    users = _consumers(g, emb)
    for n in users:
        if not (n.op_type == "Gather" and n.input[0] == emb) and n.name != "lm_head.gemm":
            raise RuntimeError(f"embedding {emb} used by unexpected {n.op_type} {n.name}")
    return [n for n in users if n.op_type == "Gather"]


def _quantize_tied_int8(g, emb: str, gemm) -> None:
    e = numpy_helper.to_array(_inits(g)[emb])  # [V, dim]
    qt, s = int8_columns(e.T)  # per-row of E
    q = np.ascontiguousarray(qt.T)
    gathers = _embedding_gathers(g, emb)
    _replace_init(g, emb, {emb + ".q8": q, emb + ".scale": s,
                           "q8.axes_last": np.array([-1], dtype=np.int64)})
    for n in gathers:
        _splice(g, n, _gather_rows_int8(g, emb, emb + ".q8", emb + ".scale", n))
    # LM head: DynamicQuantizeMatMul(h2d, Transpose(Eq), scale); ORT folds the int8 transpose once
    # at session start, the file keeps one copy.
    _splice(g, gemm, [
        helper.make_node("Transpose", [emb + ".q8"], [emb + ".q8T"], name="lm_head.q8T", perm=[1, 0]),
        helper.make_node("DynamicQuantizeMatMul", [gemm.input[0], emb + ".q8T", emb + ".scale"],
                         list(gemm.output), name="lm_head.q8", domain=MS),
    ])


def _quantize_gather_int8(g) -> None:
    """Untied model: quantise the embedding lookup table by rows too."""
    inits = _inits(g)
    for n in list(g.graph.node):
        if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2:
            name = n.input[0]
            if not name.startswith("tok_embeddings") or len(_consumers(g, name)) != 1:
                continue
            e = numpy_helper.to_array(inits[name])
            qt, s = int8_columns(e.T)
            _replace_init(g, name, {name + ".q8": np.ascontiguousarray(qt.T), name + ".scale": s,
                                    "q8.axes_last": np.array([-1], dtype=np.int64)})
            _splice(g, n, _gather_rows_int8(g, name, name + ".q8", name + ".scale", n))


def _quantize_int8_storage(src: str, dst: str) -> None:
    g = load_graph(src)
    inits = _inits(g)
    emb, _ = _tied_embedding(g)
    new_nodes = []
    for name, init in list(inits.items()):
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) != 2:
            continue
        users = _consumers(g, name)
        if name == "mask_embeddings":  # BiTA's few trained rows stay exact (as in the int8 variant)
            continue
        if not users or not all(n.op_type in ("MatMul", "Gemm", "Gather") for n in users):
            continue
        a = numpy_helper.to_array(init)
        if all(n.op_type == "MatMul" and n.input[1] == name for n in users):
            q, s = int8_columns(a)  # [K, N]: one scale per output column
            shape = np.array([1, -1], dtype=np.int64)
        elif name == emb or all(n.op_type == "Gather" and n.input[0] == name for n in users):
            qt, s = int8_columns(a.T)  # [V, dim] table: one scale per row (== per LM-head column)
            q = np.ascontiguousarray(qt.T)
            shape = np.array([-1, 1], dtype=np.int64)
        else:
            continue
        _replace_init(g, name, {name + ".q8": q, name + ".scale": s, name + ".scale_shape": shape})
        new_nodes += [
            helper.make_node("Cast", [name + ".q8"], [name + ".f"], name=name + ".cast", to=onnx.TensorProto.FLOAT),
            helper.make_node("Reshape", [name + ".scale", name + ".scale_shape"], [name + ".s2"], name=name + ".sview"),
            helper.make_node("Mul", [name + ".f", name + ".s2"], [name], name=name + ".dequant"),
        ]
    nodes = list(g.graph.node)
    del g.graph.node[:]
    g.graph.node.extend(new_nodes + nodes)
    _finish(g, dst)


# --- 4-bit ----------------------------------------------------------------------------------------

BLOCK = 32
ACCURACY_LEVEL = 4  # int8 activations in MatMulNBits (0: fp32 compute)
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def int4_blocks(w: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """w [N, K] float32 (one row per output column) -> (packed uint8 [N, kb, block/2], scales [N, kb]).
    Symmetric: value = (nibble - 8) * scale, nibble in 0..15 (-8..7); K is zero-padded to whole blocks;
    element 2j sits in the low nibble of byte j (MatMulNBits / GatherBlockQuantized layout)."""
    n, k = w.shape
    kb = -(-k // block)
    p = np.zeros((n, kb * block), dtype=np.float32)
    p[:, :k] = w
    p = p.reshape(n, kb, block)
    amax = np.abs(p).max(axis=2)
    amax[amax == 0] = 1.0
    # Per block, the scale (a fraction of absmax/7, clipping the largest values) with the least
    # squared error: on stories260K this lifts 4-bit greedy agreement with fp32 (see README).
    best_err = np.full(amax.shape, np.inf, dtype=np.float32)
    scale = (amax / np.float32(7.0)).astype(np.float32)
    for r in CLIP_RATIOS:
        s = (amax * np.float32(r) / np.float32(7.0)).astype(np.float32)
        qq = np.clip(np.round(p / s[:, :, None]), -8, 7)
        err = ((qq * s[:, :, None] - p) ** 2).sum(axis=2)
        better = err < best_err
        best_err[better], scale[better] = err[better], s[better]
    q = (np.clip(np.round(p / scale[:, :, None]), -8, 7) + 8).astype(np.uint8)
    packed = (q[:, :, 0::2] | (q[:, :, 1::2] << 4)).astype(np.uint8)
    return packed, scale


def _matmul_nbits(a: str, out: str, w_name: str, k: int, n: int, name: str, bq: str | None = None,
                  sc: str | None = None):
    return helper.make_node("MatMulNBits", [a, bq or w_name + ".q4", sc or w_name + ".scale"], [out], name=name,
                            domain=MS, K=k, N=n, bits=4, block_size=BLOCK, accuracy_level=ACCURACY_LEVEL)


def quantize_4bit(src: str, dst: str) -> None:
    g = load_graph(src)
    for n, b in list(_matmul_weights(g)):
        w = n.input[1]
        if len(_consumers(g, w)) != 1:
            continue
        k, nn_ = b.shape
        packed, scale = int4_blocks(np.ascontiguousarray(b.T))
        _replace_init(g, w, {w + ".q4": packed, w + ".scale": scale.reshape(-1)})
        _splice(g, n, [_matmul_nbits(n.input[0], n.output[0], w, k, nn_, n.name + ".q4")])
    emb, gemm = _tied_embedding(g)
    if emb is not None:
        e = numpy_helper.to_array(_inits(g)[emb])
        v, d = e.shape
        if d % BLOCK == 0:
            _quantize_tied_4bit(g, emb, gemm, e)
        else:  # blocks would not line up for a shared table: int8 rows for lookup and head
            _quantize_tied_int8(g, emb, gemm)
    else:
        _quantize_gather_int8(g)
    _finish(g, dst)


def _quantize_tied_4bit(g, emb: str, gemm, e: np.ndarray) -> None:
    v, d = e.shape
    kb = d // BLOCK
    packed, scale = int4_blocks(e)  # rows of E are the head's output columns
    gathers = _embedding_gathers(g, emb)
    _replace_init(g, emb, {emb + ".q4": packed.reshape(v, d // 2), emb + ".scale": scale,
                           emb + ".q4shape": np.array([v, kb, BLOCK // 2], dtype=np.int64),
                           "q4.flat": np.array([-1], dtype=np.int64),
                           emb + ".zp": np.full((v, -(-kb // 2)), 0x88, dtype=np.uint8)})
    for n in gathers:
        _splice(g, n, [helper.make_node("GatherBlockQuantized", [emb + ".q4", n.input[1], emb + ".scale", emb + ".zp"],
                                        list(n.output), name=(n.name or emb) + ".gbq", domain=MS,
                                        gather_axis=0, quantize_axis=1, block_size=BLOCK, bits=4)])
    # The head views the same bytes as [V, blocks, 16]; ORT folds the Reshape at session start.
    _splice(g, gemm, [
        helper.make_node("Reshape", [emb + ".q4", emb + ".q4shape"], [emb + ".q4b"], name="lm_head.q4view"),
        helper.make_node("Reshape", [emb + ".scale", "q4.flat"], [emb + ".scale1"], name="lm_head.scaleview"),
        _matmul_nbits(gemm.input[0], gemm.output[0], emb, d, v, "lm_head.q4", emb + ".q4b", emb + ".scale1"),
    ])
