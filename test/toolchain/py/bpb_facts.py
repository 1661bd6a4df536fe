"""bits_per_byte checks, as JSON: a model with all-zero logits must score exactly log2(V) bits per
predicted token; stories260K scores a plausible value on a few held-out paragraphs."""
import json
import math
import os

import sentencepiece as spm
import torch

from bitatool.evalbpb import bits_per_byte, held_out_text
from bitatool.llama2c import load_llama2c
from bitatool.stories260k import DEFAULT_SHARED

st = os.path.join(DEFAULT_SHARED, "models/stories260K")
sp = spm.SentencePieceProcessor(model_file=os.path.join(st, "tok512.model"))
text = held_out_text(os.path.join(DEFAULT_SHARED, "text/tinystories_val_subset.txt"))
paras = [p.strip() for p in text.split("\n\n") if p.strip()][:6]
sample = "\n\n".join(paras)
m = load_llama2c(os.path.join(st, "stories260K.bin"))
real = bits_per_byte(m, sp, sample)
m.c.max_positions = 16  # also exercises the windowing of long paragraphs
with torch.no_grad():
    m.tok_embeddings.weight.zero_()  # tied head: every logit 0, p = 1/V
uniform = bits_per_byte(m, sp, sample)
tokens = sum(len(sp.encode(p)) for p in paras)  # predicted tokens: all but BOS
nbytes = sum(len(p.encode("utf-8")) + 1 for p in paras)
print(json.dumps({"uniform": uniform, "expected_uniform": tokens * math.log2(512) / nbytes, "real": real,
                  "paragraphs": len(paras)}))
