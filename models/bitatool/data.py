"""Training text, prompts and self-distilled data (greedy answers of the model itself).

Held-out convention (shared with evalbpb): the LAST 10 % of tinystories_val_subset.txt, split at a
blank line, is held out; training only ever reads the first 90 % plus text that models generate.
"""
from __future__ import annotations

import hashlib
import os
import random
import time

import torch

from .model import Llama, NEG

SHARED = os.environ.get("BITAD_SHARED_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
TEXT = "text/tinystories_val_subset.txt"
TOK_MODEL = "models/stories260K/tok512.model"
TEACHER = "models/stories260K/stories260K.bin"
BUILD = os.path.join(os.path.dirname(__file__), "..", "_build")
BOS, EOS = 1, 2


def shared_path(rel: str, root: str | None = None) -> str:
    return os.path.normpath(os.path.join(root or SHARED, rel))


def split_text(text: str, frac: float = 0.9) -> tuple[str, str]:
    """(train, held_out): cut at the first blank line at or after frac of the characters."""
    cut = text.find("\n\n", int(len(text) * frac))
    if cut < 0:
        raise ValueError("no blank line after the split point")
    return text[:cut], text[cut + 2 :]


def paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def load_sp(root: str | None = None):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=shared_path(TOK_MODEL, root))


def split_file(path: str) -> tuple[str, str]:
    """split_text of a file; a file it cannot split (empty, no paragraphs) is a ValueError naming it."""
    with open(path, encoding="utf-8") as f:
        try:
            return split_text(f.read())
        except ValueError as e:
            raise ValueError(f"{path}: {e} (the text needs paragraphs separated by blank lines)") from e


def read_split(root: str | None = None) -> tuple[str, str]:
    return split_file(shared_path(TEXT, root))


def encode_paragraphs(sp, text: str) -> list[list[int]]:
    """BOS + ids per paragraph (llama2.c's stories260K was trained with BOS before each story)."""
    return [[BOS] + sp.encode(p) for p in paragraphs(text)]


def make_prompts(docs: list[list[int]], n: int, seed: int, min_len: int = 4, max_len: int = 24) -> list[list[int]]:
    """Half paragraph openings, half random places inside a paragraph (each BOS-led), cut at a
    random token length so the model has something to continue."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        d = docs[rng.randrange(len(docs))]
        body = d[1:]
        if len(body) < min_len + 8:
            continue
        start = 0
        if rng.random() < 0.5:  # a random place inside the paragraph
            start = rng.randrange(0, max(1, len(body) - min_len - 8))
        k = rng.randint(min_len, max_len)
        out.append([BOS] + body[start : start + k])
    return out


@torch.no_grad()
def generate(model: Llama, prompts: list[list[int]], n_new: int, batch: int = 64, temperature: float = 0.0,
             seed: int = 0, stop_ids=(BOS, EOS), log=None) -> list[list[int]]:
    """Batched KV-cached decoding (greedy when temperature == 0). Prompts are grouped by length so a
    batch shares positions; returns prompt + continuation, cut before the first stop id."""
    g = torch.Generator().manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int] | None] = [None] * len(prompts)
    t0 = time.time()
    done = 0
    i = 0
    while i < len(order):
        L = len(prompts[order[i]])
        idx = [order[j] for j in range(i, min(i + batch, len(order))) if len(prompts[order[j]]) == L]
        i += len(idx)
        ids = torch.tensor([prompts[k] for k in idx], dtype=torch.long)
        B = ids.shape[0]
        n = min(n_new, model.c.max_positions - L)
        pos = torch.arange(L).unsqueeze(0).expand(B, L)
        bias = torch.full((L, L), NEG).triu(1).view(1, 1, L, L)
        logits, kv = model(ids, pos, bias)
        past = [(k, v) for k, v in kv]
        gen = []
        alive = torch.ones(B, dtype=torch.bool)
        for t in range(n):
            last = logits[:, -1]
            if temperature > 0:
                nxt = torch.multinomial(torch.softmax(last / temperature, -1), 1, generator=g).squeeze(1)
            else:
                nxt = last.argmax(-1)
            gen.append(nxt)
            for s in stop_ids:
                alive &= nxt != s
            if not alive.any() or t == n - 1:
                break
            p = torch.full((B, 1), L + t, dtype=torch.long)
            logits, kv = model(nxt.view(B, 1), p, torch.zeros(1, 1, 1, L + t + 1), past)
            past = [(torch.cat([pk, k], 1), torch.cat([pv, v], 1)) for (pk, pv), (k, v) in zip(past, kv)]
        gen_t = torch.stack(gen, 1).tolist()
        for b, k in enumerate(idx):
            cont = gen_t[b]
            for j, tok in enumerate(cont):
                if tok in stop_ids:
                    cont = cont[:j]
                    break
            out[k] = prompts[k] + cont
        done += B
        if log:
            el = time.time() - t0
            log(f"generate: {done}/{len(prompts)} sequences, {el:.0f}s, ETA {el / done * (len(prompts) - done):.0f}s")
    return out  # type: ignore[return-value]


@torch.no_grad()
def generate_recompute(model: Llama, prompts: list[list[int]], n_new: int) -> list[list[int]]:
    """Greedy without a KV cache (whole sequence each step); kept to measure against `generate`."""
    ids = torch.tensor(prompts, dtype=torch.long)
    for _ in range(n_new):
        Q = ids.shape[1]
        pos = torch.arange(Q).unsqueeze(0).expand(ids.shape[0], Q)
        logits, _ = model(ids, pos, torch.full((Q, Q), NEG).triu(1).view(1, 1, Q, Q))
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids.tolist()


def model_digest(model: Llama) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def self_distilled(model: Llama, docs: list[list[int]], n: int, n_new: int, seed: int, cache_dir: str | None = None,
                   log=print, batch: int = 64) -> list[tuple[list[int], int]]:
    """n greedy (prompt + answer, prompt length) pairs of `model`, cached by model digest and settings."""
    cache_dir = cache_dir or BUILD
    os.makedirs(cache_dir, exist_ok=True)
    key = f"sd-{model_digest(model)}-{n}-{n_new}-{seed}.pt"
    path = os.path.join(cache_dir, key)
    if os.path.exists(path):
        log(f"self-distilled data: cached {path}")
        return torch.load(path)
    prompts = make_prompts(docs, n, seed)
    t0 = time.time()
    seqs = [(s, len(p)) for s, p in zip(generate(model, prompts, n_new, batch=batch, log=log), prompts)]
    log(f"self-distilled data: {n} sequences, {sum(len(s) for s, _ in seqs)} tokens in {time.time() - t0:.0f}s -> {path}")
    torch.save(seqs, path)
    return seqs
