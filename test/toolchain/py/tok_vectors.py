"""Write tokenizer.json conversions of stories260K's tokenizers and sentencepiece's own ids.

usage: tok_vectors.py OUT_DIR N_LINES
OUT_DIR/from_model.json (tok512.model), from_bin.json (tok512.bin), tokenizer_config.json,
cases.json: [{"text", "ids" (sentencepiece, no BOS), "decoded" (sentencepiece decode of ids)}]
for the first N_LINES non-empty TinyStories lines plus hand-made edge cases.
"""
import json
import os
import sys

import sentencepiece as spm

from bitatool.package import write_tokenizer_config
from bitatool.tokenizer import llama2c_tokenizer_to_json, sentencepiece_to_tokenizer_json

DATA = os.path.join(os.path.dirname(__file__), "../../../../shared/data")
EDGE = [
    "  leading and  double   spaces, trailing  ",
    "Numbers 12345 and 3.14, emoji \U0001F600, accents caf\u00e9 na\u00efve, CJK \u732b",
    "tab\there and a\nnewline inside",
    "Lily said, \"Don't worry!\" -- 'ok'?",
    "a",
]


def main(out, n):
    st = os.path.join(DATA, "models/stories260K")
    tok = sentencepiece_to_tokenizer_json(os.path.join(st, "tok512.model"), os.path.join(out, "from_model.json"))
    llama2c_tokenizer_to_json(os.path.join(st, "tok512.bin"), os.path.join(out, "from_bin.json"))
    write_tokenizer_config(out, tok, 1, 2, True, None)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(st, "tok512.model"))
    with open(os.path.join(DATA, "text/tinystories_val_subset.txt"), encoding="utf-8") as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip()][:n]
    cases = []
    for text in lines + EDGE:
        ids = sp.encode(text)
        cases.append({"text": text, "ids": ids, "decoded": sp.decode(ids)})
    with open(os.path.join(out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
