"""Helpers for test/toolchain/mask-aware.test.ts.

  make <out.pt>            a tiny LLaMA (dim 16, 2 layers, tok512 vocabulary) with random BiTA adapters
  same <a.pt> <b.pt>       JSON: whether two checkpoints hold identical weights, and their extra
  rep4 <cases JSON>        JSON: repeated_ngram_share of each case (a list of sequences)
  loads <model.pt> <dir>   JSON: how often train-mask-aware torch.loads --model before it makes its data
"""
import json
import sys

import torch

from bitatool.checkpoint import save_model
from bitatool.distill import init_student
from bitatool.model import Config
from bitatool.quality import repeated_ngram_share


def make(out: str) -> None:
    c = Config(dim=16, n_layers=2, n_heads=2, n_kv_heads=1, hidden_dim=32, vocab_size=512, max_positions=256)
    m = init_student(c, 3)
    m.add_bita(3, 4, seed=3)
    save_model(m, out, extra={"name": "tiny"})


def same(a: str, b: str) -> None:
    x, y = torch.load(a), torch.load(b)
    diff = max((x["state"][k] - y["state"][k]).abs().max().item() for k in x["state"])
    print(json.dumps({"max_abs_diff": diff, "extra_a": x["extra"], "extra_b": y["extra"]}))


def loads(model: str, work: str) -> None:
    from bitatool import cli_mask_aware
    from bitatool.__main__ import main

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop

    count, real_load = [0], torch.load

    def counting_load(f, *args, **kwargs):
        count[0] += f == model
        return real_load(f, *args, **kwargs)

    torch.load, cli_mask_aware._training_data = counting_load, stop
    try:
        main(["train-mask-aware", "--model", model, "--out", work + "/out.pt", "--work", work])
    except Stop:
        pass
    print(json.dumps({"loads": count[0]}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2])
    elif cmd == "same":
        same(sys.argv[2], sys.argv[3])
    elif cmd == "rep4":
        print(json.dumps([repeated_ngram_share(case) for case in json.loads(sys.argv[2])]))
    elif cmd == "loads":
        loads(sys.argv[2], sys.argv[3])
