"""Bits per byte of a model on held-out text (tokenizer-independent, so models with different
vocabularies compare fairly).

bpb = (sum over predicted tokens of -log2 p(token | context)) / (UTF-8 bytes of the text).
Each paragraph is scored on its own, starting from BOS (as llama2.c trained on TinyStories); the
bytes counted are the paragraph's own UTF-8 bytes plus one for its separator, which the model is
not asked to predict (the same convention for every model compared). Paragraphs longer than
max_positions are scored in consecutive windows (the last token of one starts the next).
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from .model import Llama, causal_bias

BOS = 1


def held_out_text(path: str) -> str:
    """The held-out part of a text file: the LAST 10 %, cut at a blank line (bitatool.data's rule)."""
    from .data import split_file

    return split_file(path)[1]


def _encoder(sp_or_tokenizer):
    if isinstance(sp_or_tokenizer, str):
        import sentencepiece as spm

        sp_or_tokenizer = spm.SentencePieceProcessor(model_file=sp_or_tokenizer)
    if hasattr(sp_or_tokenizer, "encode"):
        return lambda s: list(sp_or_tokenizer.encode(s))
    if callable(sp_or_tokenizer):
        return sp_or_tokenizer
    raise TypeError("pass a sentencepiece processor, a .model path, or a callable text -> ids")


@torch.no_grad()
def nll_bits(model: Llama, ids: list[int]) -> float:
    """Total -log2 p of ids[1:] given their prefixes (ids[0] is the context start, e.g. BOS)."""
    model.eval()
    win = model.c.max_positions
    total = 0.0
    start = 0
    while start < len(ids) - 1:
        chunk = ids[start : start + win]
        x = torch.tensor([chunk])
        q = x.shape[1]
        logits, _ = model(x, torch.arange(q).view(1, q), causal_bias(q), None)
        lp = F.log_softmax(logits[0, :-1].float(), -1)
        tgt = x[0, 1:]
        total -= lp.gather(1, tgt.view(-1, 1)).sum().item()
        start += q - 1  # the last token of a window starts the next one
    return total / math.log(2)


def bits_per_byte(model: Llama, sp_or_tokenizer, text: str, max_paragraphs: int | None = None,
                  bos_id: int = BOS, log=None) -> float:
    encode = _encoder(sp_or_tokenizer)
    paras = [p.strip() for p in text.split("\n\n") if p.strip()]
    if max_paragraphs:
        paras = paras[:max_paragraphs]
    bits = 0.0
    nbytes = 0
    for i, p in enumerate(paras):
        bits += nll_bits(model, [bos_id] + encode(p))
        nbytes += len(p.encode("utf-8")) + 1
        if log and (i + 1) % 50 == 0:
            log(f"[bpb] {i + 1}/{len(paras)} paragraphs, {bits / nbytes:.4f} bits/byte so far")
    if nbytes == 0:
        raise ValueError("no text to evaluate")
    return bits / nbytes


def default_text_path(shared: str) -> str:
    return os.path.join(shared, "text", "tinystories_val_subset.txt")
