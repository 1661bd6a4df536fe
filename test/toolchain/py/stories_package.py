"""Package plain stories260K (fp32, int8, int4) and write held-out token sequences.

usage: stories_package.py OUT_DIR N_PARAGRAPHS -> OUT_DIR/package/, OUT_DIR/heldout.json
"""
import json
import os
import sys

import sentencepiece as spm

from bitatool.evalbpb import held_out_text
from bitatool.orteval import held_out_sequences
from bitatool.stories260k import DEFAULT_SHARED, build


def main(out, n):
    build(out=os.path.join(out, "package"), adapters=None, variants=("fp32", "int8", "int8w", "int4"), measure=False,
          log=lambda *_: None)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(DEFAULT_SHARED, "models/stories260K/tok512.model"))
    held = held_out_text(os.path.join(DEFAULT_SHARED, "text/tinystories_val_subset.txt"))
    with open(os.path.join(out, "heldout.json"), "w") as f:
        json.dump(held_out_sequences(sp, held, n=n, max_len=128), f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
