"""Reference LLaMA-family decoder with BiTA adapters (prefix K/V + mask embeddings).

One forward serves training (packed mask groups), prefill and KV-cached tree steps, and is the
function exported to ONNX (see docs/package-format.md). Shapes are noted as [B, Q, ...].
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

NEG = -1e9  # large finite negative: -inf makes NaN for fully masked rows (platform-notes.md)


@dataclass
class Config:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    vocab_size: int
    max_positions: int = 512
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tied_embedding: bool = True
    qkv_bias: bool = False
    n_masks: int = 0  # BiTA mask tokens M (ids V..V+M-1)
    n_prefix: int = 0  # BiTA prefix slots P per layer

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def to_dict(self) -> dict:
        d = asdict(self)
        d["head_dim"] = self.head_dim
        return d

    @staticmethod
    def from_dict(d: dict) -> "Config":
        keys = Config.__dataclass_fields__.keys()
        return Config(**{k: v for k, v in d.items() if k in keys})


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, pos, theta: float):
    """Rotate-half RoPE. x: [B, Q, H, D]; pos: [B, Q] int64."""
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))  # [D/2]
    ang = pos.to(torch.float32).unsqueeze(-1) * inv  # [B, Q, D/2]
    cos = torch.cat([ang.cos(), ang.cos()], -1).unsqueeze(2)  # [B, Q, 1, D]
    sin = torch.cat([ang.sin(), ang.sin()], -1).unsqueeze(2)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def _repeat_kv(x, rep: int):
    """[B, KVH, T, D] -> [B, KVH*rep, T, D], head h reading KV head h // rep (GQA). Written with
    expand/reshape on traced sizes so the ONNX export keeps T dynamic (repeat_interleave does not)."""
    if rep == 1:
        return x
    b, kvh, t, d = x.shape
    return x.unsqueeze(2).expand(b, kvh, rep, t, d).reshape(b, kvh * rep, t, d)


class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        hd = c.head_dim
        self.wq = nn.Linear(c.dim, c.n_heads * hd, bias=c.qkv_bias)
        self.wk = nn.Linear(c.dim, c.kv_dim, bias=c.qkv_bias)
        self.wv = nn.Linear(c.dim, c.kv_dim, bias=c.qkv_bias)
        self.wo = nn.Linear(c.n_heads * hd, c.dim, bias=False)

    def forward(self, x, pos, bias, past_k, past_v, prefix_k, prefix_v, prefix_bias):
        # x: [B, Q, dim]; bias: [B, 1, Q, past+Q]; past_k/v: [B, past, KVH, D] (sequence-major)
        # prefix_k/v: [KVH, P, D] or None; prefix_bias: [B, 1, Q, P] (0 for mask rows, NEG else)
        c = self.c
        B, Q, _ = x.shape
        hd = c.head_dim
        q = rope(self.wq(x).view(B, Q, c.n_heads, hd), pos, c.rope_theta)
        k = rope(self.wk(x).view(B, Q, c.n_kv_heads, hd), pos, c.rope_theta)
        v = self.wv(x).view(B, Q, c.n_kv_heads, hd)
        keys = torch.cat([past_k, k], 1) if past_k is not None else k  # [B, T, KVH, D]
        vals = torch.cat([past_v, v], 1) if past_v is not None else v
        rep = c.n_heads // c.n_kv_heads
        keys = _repeat_kv(keys.transpose(1, 2), rep)  # [B, H, T, D]
        vals = _repeat_kv(vals.transpose(1, 2), rep)
        qh = q.transpose(1, 2)  # [B, H, Q, D]
        scale = 1.0 / math.sqrt(hd)
        scores = torch.matmul(qh, keys.transpose(-1, -2)) * scale + bias  # [B, H, Q, T]
        if prefix_k is not None:
            pk = _repeat_kv(prefix_k.unsqueeze(0), rep)  # [1, H, P, D]; never rotated
            pv = _repeat_kv(prefix_v.unsqueeze(0), rep)
            pscores = torch.matmul(qh, pk.transpose(-1, -2)) * scale + prefix_bias  # [B, H, Q, P]
            probs = torch.softmax(torch.cat([pscores, scores], -1), -1)
            P = pk.shape[2]
            out = torch.matmul(probs[..., :P], pv) + torch.matmul(probs[..., P:], vals)
        else:
            out = torch.matmul(torch.softmax(scores, -1), vals)
        out = out.transpose(1, 2).reshape(B, Q, c.n_heads * hd)
        return self.wo(out), k, v


class FeedForward(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.w1 = nn.Linear(c.dim, c.hidden_dim, bias=False)  # gate
        self.w3 = nn.Linear(c.dim, c.hidden_dim, bias=False)  # up
        self.w2 = nn.Linear(c.hidden_dim, c.dim, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.attention_norm = RMSNorm(c.dim, c.norm_eps)
        self.attention = Attention(c)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.feed_forward = FeedForward(c)


class Llama(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList([Block(c) for _ in range(c.n_layers)])
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.output = None if c.tied_embedding else nn.Linear(c.dim, c.vocab_size, bias=False)
        self.mask_embeddings = nn.Parameter(torch.zeros(c.n_masks, c.dim)) if c.n_masks else None
        # BiTA prefix table [P, 2 * n_layers * kv_dim] (bita.md section 1), KV-head count.
        self.prefix = nn.Parameter(torch.zeros(c.n_prefix, 2 * c.n_layers * c.kv_dim)) if c.n_prefix else None

    def add_bita(self, n_masks: int, n_prefix: int, seed: int = 0) -> None:
        """Attach fresh adapters; base weights are left as they are (and should be frozen)."""
        g = torch.Generator().manual_seed(seed)
        c = self.c
        c.n_masks, c.n_prefix = n_masks, n_prefix
        std = self.tok_embeddings.weight.detach().std().item()
        self.mask_embeddings = nn.Parameter(torch.randn(n_masks, c.dim, generator=g) * std)
        self.prefix = nn.Parameter(torch.randn(n_prefix, 2 * c.n_layers * c.kv_dim, generator=g) * 0.02)

    def prefix_kv(self, prefix_table=None):
        """Per-layer prefix K/V, each [KVH, P, D]; None when there is no prefix."""
        table = self.prefix if prefix_table is None else prefix_table
        if table is None or table.shape[0] == 0:
            return None
        c = self.c
        P = table.shape[0]
        t = table.view(P, c.n_layers, 2, c.n_kv_heads, c.head_dim).permute(1, 2, 3, 0, 4)
        return [(t[i, 0], t[i, 1]) for i in range(c.n_layers)]  # [KVH, P, D] each

    def embed(self, ids):
        V = self.c.vocab_size
        if self.mask_embeddings is None:
            return self.tok_embeddings(ids)
        is_mask = ids >= V
        tok = self.tok_embeddings(torch.where(is_mask, torch.zeros_like(ids), ids))
        msk = self.mask_embeddings[torch.where(is_mask, ids - V, torch.zeros_like(ids))]
        return torch.where(is_mask.unsqueeze(-1), msk, tok)

    def lm_head(self, h):
        w = self.tok_embeddings.weight if self.output is None else self.output.weight
        return torch.matmul(h, w.t())

    def forward(self, ids, pos, bias, past=None, prefix_table=None):
        """ids/pos: [B, Q] int64 (ids >= V are mask tokens); bias: [B, 1, Q, past+Q] additive
        (0 visible, NEG hidden); past: list of (k, v) [B, past, KVH, D] or None.
        Returns logits [B, Q, V] and the new rows' K/V, a list of (k, v) [B, Q, KVH, D]."""
        x = self.embed(ids)
        pkv = self.prefix_kv(prefix_table)
        prefix_bias = None
        if pkv is not None:
            is_mask = (ids >= self.c.vocab_size).unsqueeze(1).unsqueeze(-1)  # [B, 1, Q, 1]
            P = pkv[0][0].shape[1]
            prefix_bias = torch.where(is_mask, 0.0, NEG).to(x.dtype).expand(-1, -1, -1, P)
        new = []
        for i, layer in enumerate(self.layers):
            pk, pv = (past[i] if past is not None else (None, None))
            pre_k, pre_v = pkv[i] if pkv is not None else (None, None)
            a, k, v = layer.attention(layer.attention_norm(x), pos, bias, pk, pv, pre_k, pre_v, prefix_bias)
            x = x + a
            x = x + layer.feed_forward(layer.ffn_norm(x))
            new.append((k, v))
        return self.lm_head(self.norm(x)), new


def causal_bias(q: int, past: int = 0) -> torch.Tensor:
    """[1, 1, Q, past+Q] plain causal additive bias."""
    b = torch.full((q, past + q), NEG)
    for i in range(q):
        b[i, : past + i + 1] = 0.0
    return b.view(1, 1, q, past + q)
