"""Run ort_eval.mjs (onnxruntime-node) on a package: int8/4-bit vs fp32 greedy agreement, step ms."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def held_out_sequences(sp, text: str, n: int = 40, max_len: int = 256, bos: int = 1) -> list[list[int]]:
    paras = [p.strip() for p in text.split("\n\n") if p.strip()][:n]
    return [([bos] + list(sp.encode(p)))[:max_len] for p in paras]


def ort_eval(package_dir: str, sequences: list[list[int]], timing: bool = True, node: str | None = None) -> dict | None:
    """None when node or onnxruntime-node is unavailable (the caller says so)."""
    node = node or shutil.which("node")
    if not node:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(sequences, f)
        seq_path = f.name
    try:
        args = [node, os.path.join(HERE, "ort_eval.mjs"), package_dir, seq_path] + (["--time"] if timing else [])
        r = subprocess.run(args, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(HERE)))
        if r.returncode != 0:
            raise RuntimeError(f"ort_eval failed: {r.stderr[-2000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(seq_path)


def add_ort_eval(package_dir: str, sequences: list[list[int]], timing: bool = True, log=print) -> dict | None:
    """Measure the package's graphs with onnxruntime-node and record the results in the `eval`
    block of its manifest.json (in place): `<variant>_greedy_agreement` for every non-fp32 variant,
    `greedy_agreement_positions`, and `ort_ms_1thread` step times. Returns the new eval block,
    or None (and says so) when node is not available."""
    r = ort_eval(package_dir, sequences, timing=timing)
    if r is None:
        log("[ort-eval] node not found: quantised-graph agreement not measured")
        return None
    path = os.path.join(package_dir, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    ev = dict(manifest.get("eval") or {})
    for v, a in r["agreement_vs_fp32"].items():
        ev[f"{v}_greedy_agreement"] = a
    ev["greedy_agreement_positions"] = r["positions"]
    if timing:
        ev["ort_ms_1thread"] = r["ms"]
    manifest["eval"] = ev
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
    log(f"[ort-eval] agreement with fp32: {r['agreement_vs_fp32']} over {r['positions']} positions")
    return ev
