"""The recipe for the bundled default model (models/tinystories-bita), from ../shared/data only:

1. distil a base model from stories260K (bitatool.distill; resumable, cached in models/_build);
2. self-distilled data from the int8-rounded base (the package serves int8), prompts from the 90 %
   training split, held-out prompts from the last 10 %;
3. BiTA adapters trained on the int8-rounded frozen base (what the int8 graph computes);
4. measurements: mask accuracy, bits per byte next to stories260K, int8-vs-fp32 greedy agreement
   (onnxruntime-node), a greedy continuation of "Once upon a time";
5. the package (bitatool.package.write_package), int8w graph served by default, and the n-gram draft
   table counted on the self-distilled answers (bitatool.ngram).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

import torch

from .bita_eval import mask_accuracy
from .bita_train import BitaSettings, save_adapters, train_bita
from .checkpoint import load_model
from .data import BUILD, TEACHER, TEXT, TOK_MODEL, encode_paragraphs, generate, load_sp, read_split, self_distilled, shared_path
from .distill import DistillSettings, distill
from .evalbpb import bits_per_byte
from .llama2c import load_llama2c
from . import ngram
from .package import file_entry, write_package
from .quantize import fake_quant_int8
from .tokenizer import sentencepiece_to_tokenizer_json

NAME = "tinystories-bita"
DISTILL = DistillSettings()
BITA = BitaSettings(steps=400)  # sized to the 2-core budget; see docs/models.md
DATA = {"n_train": 2000, "n_eval": 200, "n_new": 160, "seed": 11}


def _copy_adapters(src, dst) -> None:
    dst.add_bita(src.c.n_masks, src.c.n_prefix)
    with torch.no_grad():
        dst.mask_embeddings.copy_(src.mask_embeddings)
        dst.prefix.copy_(src.prefix)


def write_checkpoint(out: str, model, manifest: dict) -> None:
    """The fp32 torch checkpoint (base + adapters) next to the graphs, so `bitatool bpb` and
    `eval-masks` run on the bundled model from a fresh clone; listed under provenance, not under
    `files` (the engine never reads it)."""
    from .checkpoint import save_model

    path = os.path.join(out, "checkpoint.pt")
    save_model(model, path, extra={"name": NAME})
    manifest["provenance"]["torch_checkpoint"] = {"file": "checkpoint.pt", **file_entry(path),
                                                  "load_with": "bitatool.checkpoint.load_model"}


def build_default(shared: str, out: str, log=print, skip_ort: bool = False) -> dict:
    t0 = time.time()
    work = os.path.join(BUILD, "default")
    os.makedirs(work, exist_ok=True)
    student_path = os.path.join(work, "student.pt")
    if os.path.exists(student_path) and not os.path.exists(student_path + ".ckpt"):
        raise SystemExit(f"{student_path} exists without its training checkpoint; delete it to rebuild")
    t = time.time()
    if not (os.path.exists(student_path) and torch.load(student_path + ".ckpt")["step"] >= DISTILL.steps):
        distill(student_path, DISTILL, root=shared, log=log, workdir=work)
    distill_secs = round(time.time() - t)
    base = load_model(student_path)
    distill_extra = torch.load(student_path)["extra"]
    q = fake_quant_int8(base)

    sp = load_sp(shared)
    train_text, held = read_split(shared)
    log("[default] self-distilled data from the int8-rounded base")
    train = self_distilled(q, encode_paragraphs(sp, train_text), DATA["n_train"], DATA["n_new"], DATA["seed"], work, log=log)
    ev = self_distilled(q, encode_paragraphs(sp, held), DATA["n_eval"], DATA["n_new"], DATA["seed"] + 1, work, log=log)

    t = time.time()
    adapters = os.path.join(work, "adapters.pt")
    train_bita(q, train, BITA, ckpt=adapters + ".ckpt", log=log)
    bita_secs = round(time.time() - t)
    acc = mask_accuracy(q, ev, log=log)
    log(f"[default] masks (int8 base): top1 {acc['mask_top1']} top5 {acc['mask_top5']}")
    save_adapters(q, adapters, extra=acc)
    _copy_adapters(q, base)
    acc_fp32 = mask_accuracy(base, ev)

    log("[default] bits per byte on held-out text")
    teacher = load_llama2c(shared_path(TEACHER, shared))
    bpb = {"model_fp32": bits_per_byte(base, sp, held), "model_int8_weights": bits_per_byte(q, sp, held),
           "stories260K": bits_per_byte(teacher, sp, held)}
    bpb = {k: round(v, 4) for k, v in bpb.items()}
    bpb["ratio_to_stories260K"] = round(bpb["model_fp32"] / bpb["stories260K"], 4)
    log(f"[default] bpb {bpb}")
    prompt = [1] + sp.encode("Once upon a time")
    cont = generate(base, [prompt], 120)[0]
    sample = sp.decode(cont[1:])
    log(f"[default] greedy: {sample}")

    ev_block = {
        "held_out": "last 10% of tinystories_val_subset.txt, cut at a blank line",
        "bpb_heldout": bpb,
        **acc,
        "mask_eval_on": "int8-rounded base (what the default graph computes), targets its own greedy answers "
                        "to prompts from the held-out text",
        "mask_top1_fp32_base": acc_fp32["mask_top1"], "mask_top5_fp32_base": acc_fp32["mask_top5"],
        "greedy_once_upon_a_time": sample,
    }
    tok_path = os.path.join(work, "tokenizer.json")
    sentencepiece_to_tokenizer_json(shared_path(TOK_MODEL, shared), tok_path)
    src = lambda rel: {"file": "../shared/data/" + rel, "sha256": file_entry(shared_path(rel, shared))["sha256"]}
    provenance = {
        "trained_by": "this repository's toolchain: PYTHONPATH=models /usr/bin/python3 -m bitatool build-default",
        "base_model": {"method": "distillation from stories260K: KL to its soft targets + CE on the real next "
                                 "token, on the first 90% of TinyStories validation text and on samples drawn "
                                 "from stories260K (temperature 1)",
                       "teacher": {"name": "stories260K (karpathy/tinyllamas, MIT)", **src(TEACHER)},
                       "text": {"name": "TinyStories validation subset (first 90%)", **src(TEXT)},
                       "settings": asdict(DISTILL), "train_seconds_in_this_build": distill_secs,
                       "train_seconds_total": distill_extra.get("train_seconds_total"),
                       "steps_history": distill_extra.get("steps_history", [])},
        "tokenizer": {"name": "stories260K tok512 (sentencepiece BPE, 512 pieces)", **src(TOK_MODEL),
                      "converted_by": "bitatool.tokenizer.sentencepiece_to_tokenizer_json"},
        "adapters": {"method": "BiTA (bita.md section 3): prefix K/V + mask embeddings on the frozen int8-rounded "
                               "base, packed mask groups, CE per depth, AdamW + cosine",
                     "data": {**DATA, "answers_by": "int8-rounded base, greedy"},
                     "settings": asdict(BITA), "train_seconds": bita_secs},
        "fetched_weights_committed": False,
        "training_data_license": "TinyStories: CDLA-Sharing-1.0",
    }
    # int8w serves: int8 storage, fp32 compute, exactly fake_quant_int8's function (what the adapters
    # and the n-gram table were made with). int8 (DynamicQuantizeMatMul) quantises activations per
    # tensor over all rows of a run, so a row's logits depend on the other rows in the tree: measured
    # here, tree decoding then stopped matching plain decoding. It is kept for comparison only.
    variants = ("fp32", "int8", "int8w")
    manifest = write_package(out, base, tok_path, NAME, provenance, "MIT", ev_block, variants=variants,
                             default="int8w", log=log)
    if not skip_ort:
        from .orteval import held_out_sequences, ort_eval

        log("[default] onnxruntime: int8 vs fp32 greedy agreement on held-out text")
        r = ort_eval(out, held_out_sequences(sp, held))
        if r is None:
            log("[default] node not found: int8 agreement not measured")
        else:
            for v, a in r["agreement_vs_fp32"].items():
                ev_block[f"{v}_greedy_agreement"] = a
            ev_block["greedy_agreement_positions"] = r["positions"]
            ev_block["ort_ms_1thread"] = r["ms"]
    ev_block["build_seconds"] = round(time.time() - t0)
    manifest["eval"] = ev_block
    write_checkpoint(out, base, manifest)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    # N-gram draft table counted on the same self-distilled answers (bitatool.ngram).
    table = os.path.join(work, "ngram.bin")
    ngram.build(train, ev, base.c.vocab_size, table,
                {"model": "int8-rounded base", **DATA, "built_by": "python3 -m bitatool build-default"}, log=log)
    ngram.attach(out, table, log=log)
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    log(f"[default] done in {time.time() - t0:.0f} s: {out}")
    log(json.dumps(ev_block, indent=1))
    return manifest
