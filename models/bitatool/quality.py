"""Quality guards of a model (bitad issue 11): what bits per byte alone does not show.

- held-out bits per byte (bitatool.evalbpb, last 10 % of the TinyStories text);
- next-token agreement with a reference model (teacher-forced argmax on held-out paragraphs);
- repeated-4-gram share of its greedy and of its sampled (T = 1, fixed seed) continuations of
  held-out prompts: a model can draft better by getting repetitive, which bpb does not see;
- the teacher's view: stories260K's mean per-token NLL (nats) of those continuations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import encode_paragraphs, generate, make_prompts
from .evalbpb import bits_per_byte
from .model import Llama, causal_bias


def repeated_ngram_share(seqs: list[list[int]], n: int = 4) -> float:
    """Share of the n-grams of each sequence that already occurred earlier in the same sequence,
    pooled over all sequences (0 when there is no n-gram at all)."""
    total = repeated = 0
    for s in seqs:
        seen: set[tuple[int, ...]] = set()
        for i in range(len(s) - n + 1):
            g = tuple(s[i : i + n])
            repeated += g in seen
            seen.add(g)
            total += 1
    return repeated / total if total else 0.0


@torch.no_grad()
def _logits(model: Llama, ids: list[int]) -> torch.Tensor:
    ids = ids[: model.c.max_positions]
    q = len(ids)
    out, _ = model(torch.tensor([ids]), torch.arange(q).view(1, q), causal_bias(q))
    return out[0]


@torch.no_grad()
def agreement(model: Llama, reference: Llama, docs: list[list[int]]) -> float:
    """Share of positions where both models' argmax next tokens agree (teacher-forced on docs)."""
    same = count = 0
    for d in docs:
        a = _logits(model, d).argmax(-1)
        b = _logits(reference, d).argmax(-1)
        same += (a == b).sum().item()
        count += a.numel()
    return same / max(1, count)


@torch.no_grad()
def continuation_nll(teacher: Llama, seqs: list[list[int]], prompt_lens: list[int]) -> float:
    """Teacher's mean NLL (nats per token) of the continuation tokens (after each prompt)."""
    nll = 0.0
    count = 0
    for s, plen in zip(seqs, prompt_lens):
        if len(s) <= plen:
            continue
        s = s[: teacher.c.max_positions]
        lp = F.log_softmax(_logits(teacher, s)[:-1].float(), -1)
        tgt = torch.tensor(s[1:])
        tok = -lp.gather(1, tgt.view(-1, 1)).squeeze(1)[plen - 1 :]
        nll += tok.sum().item()
        count += tok.numel()
    return nll / max(1, count)


def continuations(model: Llama, prompts: list[list[int]], n_new: int, temperature: float, seed: int):
    seqs = generate(model, prompts, n_new, batch=64, temperature=temperature, seed=seed)
    return seqs, [s[len(p) :] for s, p in zip(seqs, prompts)]


def model_quality(model: Llama, reference: Llama | None, teacher: Llama, sp, held: str, *, paragraphs: int = 100,
                  prompts: int = 64, n_new: int = 160, seed: int = 5) -> dict:
    """Every figure for one model (agreement is None when there is no reference)."""
    if model.c.vocab_size != teacher.c.vocab_size:
        raise SystemExit(f"quality: vocabulary {model.c.vocab_size} is not the teacher's {teacher.c.vocab_size} "
                         "(the teacher's NLL needs the same tokenizer)")
    docs = encode_paragraphs(sp, held)
    ps = make_prompts(docs, prompts, seed)
    plens = [len(p) for p in ps]
    greedy, g_cont = continuations(model, ps, n_new, 0.0, seed)
    sampled, s_cont = continuations(model, ps, n_new, 1.0, seed)
    return {
        "bpb": round(bits_per_byte(model, sp, held, max_paragraphs=paragraphs), 4),
        "agreement_with_reference": (round(agreement(model, reference, docs[:paragraphs]), 4)
                                     if reference is not None else None),
        "rep4_greedy": round(repeated_ngram_share(g_cont), 4),
        "rep4_sampled": round(repeated_ngram_share(s_cont), 4),
        "teacher_nll_greedy": round(continuation_nll(teacher, greedy, plens), 4),
        "teacher_nll_sampled": round(continuation_nll(teacher, sampled, plens), 4),
        "continuation_tokens": {"greedy": sum(map(len, g_cont)), "sampled": sum(map(len, s_cont))},
    }


ROWS = [("bpb", "held-out bits per byte"), ("agreement_with_reference", "next-token agreement with reference"),
        ("rep4_greedy", "repeated 4-grams, greedy text"), ("rep4_sampled", "repeated 4-grams, sampled text (T=1)"),
        ("teacher_nll_greedy", "stories260K NLL of greedy text (nats/token)"),
        ("teacher_nll_sampled", "stories260K NLL of sampled text (nats/token)")]


def table(results: dict[str, dict]) -> str:
    """Markdown table: one column per model."""
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in ROWS:
        cells = []
        for n in names:
            v = results[n][key]
            cells.append("–" if v is None else (f"{100 * v:.1f} %" if key.startswith(("rep4", "agree")) else f"{v:.4f}"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
