"""Convert sentencepiece (`tokenizer.model`) and llama2.c (`tokenizer.bin`) vocabularies to a
Hugging Face `tokenizer.json` (BPE with byte fallback) that encodes exactly like sentencepiece.

sentencepiece's BPE merges the adjacent pair whose concatenation is the highest-scoring piece;
HF BPE applies merges by rank, so the merges list is every (left, right) split of every piece,
ranked by the merged piece's score (what transformers' SentencePieceExtractor does).
The normalizer reproduces sentencepiece's: optional removal of extra spaces (strip, collapse),
the dummy "▁" prefix, and spaces written as "▁". Decoding undoes them.
"""
from __future__ import annotations

import json
import os

from .llama2c import read_tokenizer_bin

SPACE = "\u2581"  # ▁
# sentencepiece ModelProto.SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def build_tokenizer_json(pieces: list[tuple[str, float, int]], add_dummy_prefix: bool = True,
                         remove_extra_whitespaces: bool = False, bos: str | None = "<s>",
                         unk: str = "<unk>") -> dict:
    """pieces: (piece text with ▁ for spaces, score, sentencepiece type) in id order."""
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    if len(vocab) != len(pieces):
        raise ValueError("duplicate pieces in vocabulary")
    mergeable = {p: s for p, s, t in pieces if t in (NORMAL, USER_DEFINED)}
    merges = []
    for piece, score in mergeable.items():
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                local.append((left, right))
        local.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        merges.extend((score, vocab[piece], lr) for lr in local)
    # highest score first; equal scores keep the lower id first, as sentencepiece's vocab order does
    merges.sort(key=lambda m: (-m[0], m[1]))

    added = [{"id": i, "content": p, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (p, _, t) in enumerate(pieces) if t in (CONTROL, UNKNOWN)]
    norm = []
    if remove_extra_whitespaces:
        # sentencepiece drops leading/trailing spaces and collapses runs of spaces (U+0020 only)
        norm += [{"type": "Replace", "pattern": {"Regex": "^ +| +$"}, "content": ""},
                 {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]
    if add_dummy_prefix:
        norm.append({"type": "Prepend", "prepend": SPACE})
    norm.append({"type": "Replace", "pattern": {"String": " "}, "content": SPACE})
    decoders = [{"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]
    if add_dummy_prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    post = None
    if bos is not None and bos in vocab:
        post = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}},
        }
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": norm},
        "pre_tokenizer": None,
        "post_processor": post,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": unk if unk in vocab else None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
            "vocab": vocab,
            "merges": [[l, r] for _, _, (l, r) in merges],
        },
    }


def _write(tok: dict, out_path: str) -> dict:
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    return tok


def read_sentencepiece(model_path: str) -> tuple[list[tuple[str, float, int]], dict]:
    """Pieces and normalizer flags of a sentencepiece ModelProto."""
    from sentencepiece import sentencepiece_model_pb2 as pb  # Debian's python3-sentencepiece has it

    m = pb.ModelProto()
    with open(model_path, "rb") as f:
        m.ParseFromString(f.read())
    if m.trainer_spec.model_type != pb.TrainerSpec.BPE:
        raise ValueError(f"{model_path}: only BPE sentencepiece models are supported")
    ns = m.normalizer_spec
    if ns.name not in ("identity", "") or ns.precompiled_charsmap:
        # nmt_nfkc etc. need sentencepiece's precompiled charsmap (HF "Precompiled" normalizer)
        raise ValueError(f"{model_path}: normalizer {ns.name!r} is not supported (identity only)")
    if not m.trainer_spec.byte_fallback:
        raise ValueError(f"{model_path}: needs byte_fallback (unknown characters would map to <unk>)")
    pieces = [(p.piece, p.score, p.type) for p in m.pieces]
    flags = {"add_dummy_prefix": ns.add_dummy_prefix, "remove_extra_whitespaces": ns.remove_extra_whitespaces}
    return pieces, flags


def sentencepiece_to_tokenizer_json(model_path: str, out_path: str) -> dict:
    pieces, flags = read_sentencepiece(model_path)
    return _write(build_tokenizer_json(pieces, **flags), out_path)


def llama2c_tokenizer_to_json(tokenizer_bin_path: str, out_path: str, remove_extra_whitespaces: bool = True) -> dict:
    """llama2.c `tokenizer.bin` (pieces with spaces, scores; ids 0-2 unk/bos/eos, then 256 bytes).
    llama2.c's own encoder adds a dummy prefix; its vocabularies come from sentencepiece trained
    with default normalizer flags, so extra spaces are removed as sentencepiece does."""
    raw = read_tokenizer_bin(tokenizer_bin_path)
    pieces = []
    for i, (text, score) in enumerate(raw):
        if i == 0:
            pieces.append(("<unk>", score, UNKNOWN))
        elif i in (1, 2):
            pieces.append(("<s>" if i == 1 else "</s>", score, CONTROL))
        elif len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            pieces.append((text, score, BYTE))
        else:
            pieces.append((text.replace(" ", SPACE), score, NORMAL))
    return _write(build_tokenizer_json(pieces, add_dummy_prefix=True,
                                       remove_extra_whitespaces=remove_extra_whitespaces), out_path)
