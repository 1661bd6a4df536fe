"""Build stories260K's package with a random adapters file (train-bita's adapter-only format) and
print the manifest; also prints whether mismatched adapters are refused.

usage: adapters_package.py OUT_DIR
"""
import json
import os
import sys

import torch

from bitatool.llama2c import load_llama2c
from bitatool.loaders import attach_adapters
from bitatool.stories260k import DEFAULT_SHARED, build


def main(out):
    g = torch.Generator().manual_seed(3)
    ad = os.path.join(out, "adapters.pt")
    torch.save({"mask_embeddings": torch.randn(4, 64, generator=g), "prefix": torch.randn(8, 2 * 5 * 32, generator=g),
                "extra": {"mask_top1": [0.5, 0.3, 0.2, 0.1], "mask_top5": [0.8, 0.6, 0.5, 0.4]}}, ad)
    manifest = build(out=os.path.join(out, "package"), adapters=ad, variants=("fp32", "int8w"), measure=False,
                     log=lambda *_: None)
    bad = os.path.join(out, "bad.pt")
    torch.save({"mask_embeddings": torch.zeros(3, 32), "prefix": torch.zeros(8, 320)}, bad)
    m = load_llama2c(os.path.join(DEFAULT_SHARED, "models/stories260K/stories260K.bin"))
    try:
        attach_adapters(m, bad, log=lambda *_: None)
        refused = None
    except ValueError as e:
        refused = str(e)
    print(json.dumps({"manifest": manifest, "refused": refused}))


if __name__ == "__main__":
    main(sys.argv[1])
