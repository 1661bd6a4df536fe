"""Import llama2.c checkpoints (legacy v0 `.bin`) and their `tokenizer.bin`."""
from __future__ import annotations

import struct

import numpy as np
import torch

from .model import Config, Llama


def _half_rotation_order(n_heads: int, head_dim: int) -> np.ndarray:
    """llama2.c rotates interleaved pairs (2i, 2i+1); model.py rotates halves (i, i+D/2).
    Reordering the q/k output rows of every head to [0, 2, 4, …, 1, 3, 5, …] makes the two agree
    (the same order on q and k keeps every q·k dot product)."""
    per_head = np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])
    return np.concatenate([h * head_dim + per_head for h in range(n_heads)])


def load_llama2c(path: str, max_positions: int | None = None) -> Llama:
    with open(path, "rb") as f:
        dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack("7i", f.read(28))
        data = np.frombuffer(f.read(), dtype=np.float32)
    tied = vocab > 0
    vocab = abs(vocab)
    c = Config(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, hidden_dim=hidden,
               vocab_size=vocab, max_positions=max_positions or seq_len, tied_embedding=tied)
    hd, kvd = c.head_dim, c.kv_dim
    off = 0

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        if off + n > data.size:
            raise ValueError(f"{path}: truncated llama2.c checkpoint (need {off + n} floats, have {data.size})")
        a = data[off : off + n].reshape(shape)
        off += n
        return torch.from_numpy(a.copy())

    tok = take(vocab, dim)
    rms_att = take(n_layers, dim)
    wq = take(n_layers, dim, dim)
    wk = take(n_layers, kvd, dim)
    wv = take(n_layers, kvd, dim)
    wo = take(n_layers, dim, dim)
    rms_ffn = take(n_layers, dim)
    w1 = take(n_layers, hidden, dim)
    w2 = take(n_layers, dim, hidden)
    w3 = take(n_layers, hidden, dim)
    rms_final = take(dim)
    take(seq_len, hd // 2)  # freq_cis_real (legacy layout; recomputed from rope_theta)
    take(seq_len, hd // 2)  # freq_cis_imag
    wcls = None if tied else take(vocab, dim)
    if off != data.size:
        raise ValueError(f"{path}: {data.size - off} trailing floats; not a legacy v0 llama2.c checkpoint?")

    q_order = torch.from_numpy(_half_rotation_order(n_heads, hd))
    k_order = torch.from_numpy(_half_rotation_order(n_kv_heads, hd))
    m = Llama(c)
    with torch.no_grad():
        m.tok_embeddings.weight.copy_(tok)
        for i, layer in enumerate(m.layers):
            layer.attention_norm.weight.copy_(rms_att[i])
            layer.attention.wq.weight.copy_(wq[i][q_order])
            layer.attention.wk.weight.copy_(wk[i][k_order])
            layer.attention.wv.weight.copy_(wv[i])
            layer.attention.wo.weight.copy_(wo[i])
            layer.ffn_norm.weight.copy_(rms_ffn[i])
            layer.feed_forward.w1.weight.copy_(w1[i])
            layer.feed_forward.w2.weight.copy_(w2[i])
            layer.feed_forward.w3.weight.copy_(w3[i])
        m.norm.weight.copy_(rms_final)
        if wcls is not None:
            m.output.weight.copy_(wcls)
    return m.eval()


def read_tokenizer_bin(path: str) -> list[tuple[str, float]]:
    """llama2.c tokenizer.bin: int32 max_len, then per token (float32 score, int32 len, bytes)."""
    out = []
    with open(path, "rb") as f:
        (max_len,) = struct.unpack("i", f.read(4))
        while True:
            head = f.read(8)
            if len(head) < 8:
                break
            score, n = struct.unpack("fi", head)
            out.append((f.read(n).decode("utf-8", errors="replace"), score))
    return out
