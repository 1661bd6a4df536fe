"""`ngram`: count the n-gram draft table of a model on its own greedy output (bitatool.ngram)."""
from __future__ import annotations

import os

from .options import HelpFormatter, ranged


def run(args) -> int:
    import torch

    from . import data, ngram
    from .checkpoint import load_model
    from .llama2c import load_llama2c
    from .quantize import fake_quant_int8

    torch.set_num_threads(args.threads)
    if args.model == "stories260k":
        model = load_llama2c(data.shared_path("models/stories260K/stories260K.bin"))
    else:
        model = load_model(args.model)
    if args.quant == "int8":
        model = fake_quant_int8(model)
    sp = data.load_sp()
    train_text, _ = data.read_split()
    docs = data.encode_paragraphs(sp, train_text)
    seqs = data.self_distilled(model, docs, args.n, args.new_tokens, args.seed)
    cut = int(len(seqs) * 0.9)
    source = {"model": args.model, "quant": args.quant, "sequences": args.n, "new_tokens": args.new_tokens,
              "seed": args.seed, "prompts": "training split (first 90 %) of tinystories_val_subset.txt",
              "held_out": "last 10 % of the generated sequences", "built_by": "python3 -m bitatool ngram"}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    ngram.build(seqs[:cut], seqs[cut:], model.c.vocab_size, args.out, source)
    if args.attach:
        ngram.attach(args.attach, args.out)
    return 0


def register(sub) -> None:
    p = sub.add_parser("ngram", help="count a model's n-gram draft table on its own greedy output",
                       description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help='"stories260k" (from ../shared/data) or a checkpoint .pt')
    p.add_argument("--quant", choices=["none", "int8"], default="none",
                   help="generate with the int8-rounded weights the package serves")
    p.add_argument("--n", type=ranged("n", int), default=2000, help="self-distilled sequences")
    p.add_argument("--new-tokens", type=ranged("new_tokens", int), default=160, help="greedy tokens per sequence")
    p.add_argument("--seed", type=int, default=11, help="prompt choice")
    p.add_argument("--threads", type=ranged("threads", int), default=2, help="torch threads")
    p.add_argument("--out", required=True, help="where to write the table (ngram.bin; a .json sidecar too)")
    p.add_argument("--attach", help="also copy it into this package folder and record it in its manifest")
    p.set_defaults(func=run)
