"""Facts about quantised graphs of stories260K + random adapters, as JSON on stdout; also writes
OUT_DIR/model.int8w.onnx and OUT_DIR/fq_tree/ (torch fake_quant_int8 outputs on the tree case).

usage: quant_facts.py OUT_DIR (after ort_vectors.py OUT_DIR wrote model.onnx and tree/)
"""
import json
import os
import sys

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from bitatool.llama2c import load_llama2c
from bitatool.quantize import fake_quant_int8, quantize_4bit, quantize_int8
from bitatool.tensorio import read_tensors, write_tensors
from ort_vectors import build_model



def dequantised(g):
    """name -> float weights rebuilt from (q8, scale) pairs, in the layout the graph uses."""
    inits = {i.name: numpy_helper.to_array(i) for i in g.graph.initializer}
    out = {}
    for n, a in inits.items():
        if n.endswith(".q8"):
            base = n[:-3]
            s = inits[base + ".scale"]
            per_column = base.endswith(".T")  # MatMul weights [K, N]; tables [V, dim] are per row
            out[base] = a.astype(np.float32) * (s[None, :] if per_column else s[:, None])
    return out


def main(out):
    src = os.path.join(out, "model.onnx")
    files = {"fp32": src}
    for v, f in (("int8", lambda d: quantize_int8(src, d)), ("int8w", lambda d: quantize_int8(src, d, compute="fp32")),
                 ("int4", lambda d: quantize_4bit(src, d))):
        files[v] = os.path.join(out, f"model.{v}.onnx")
        f(files[v])
    m = build_model()
    fq = fake_quant_int8(m)
    V, D = m.c.vocab_size, m.c.dim
    facts = {"bytes": {v: os.path.getsize(p) for v, p in files.items()}, "vocab_tables": {}}
    for v, p in files.items():
        g = onnx.load(p)
        shapes = [tuple(i.dims) for i in g.graph.initializer]
        # every initializer that could hold a (possibly transposed / packed) copy of the embedding
        facts["vocab_tables"][v] = sorted(str(s) for s in shapes if len(s) >= 2 and s[0] in (V, D) and (V in s or s[0] == V))
    facts["prefix_initializers"] = sorted(i.name for i in onnx.load(src).graph.initializer if i.name.startswith("prefix_"))
    # int8 rounding of the graph == fake_quant_int8's rounding, for every weight matrix
    g = onnx.load(files["int8w"])
    deq = dequantised(g)
    worst, count = 0.0, 0
    params = dict(fq.named_parameters())
    for name, w in deq.items():
        if name.endswith(".T"):
            ref = params[name[:-2]].detach().numpy().T
        else:
            ref = params[name].detach().numpy()
        worst = max(worst, float(np.abs(w - ref).max()))
        count += 1
    facts["fake_quant_max_abs_diff"] = worst
    facts["fake_quant_weights_compared"] = count
    # torch fake-quant outputs on the tree case (the int8w graph must compute the same function)
    case = read_tensors(os.path.join(out, "tree"))
    L = m.c.n_layers
    past = [(torch.from_numpy(case[f"past_key_{i}"]), torch.from_numpy(case[f"past_value_{i}"])) for i in range(L)]
    with torch.no_grad():
        logits, new = fq(torch.from_numpy(case["input_ids"]), torch.from_numpy(case["position_ids"]),
                         torch.from_numpy(case["attention_bias"]), past)
    t = {k: torch.from_numpy(v) for k, v in case.items() if not k.startswith("new_") and k != "logits"}
    t["logits"] = logits
    for i, (k, v) in enumerate(new):
        t[f"new_key_{i}"], t[f"new_value_{i}"] = k, v
    write_tensors(os.path.join(out, "fq_tree"), t)
    print(json.dumps(facts))


if __name__ == "__main__":
    main(sys.argv[1])
