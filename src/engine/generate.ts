/**
 * One generation inside the engine worker: validate, tokenize, prefill, tree steps, stream text,
 * stop on EOS / stop sequence / maxTokens / context end / cancellation, and measure.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Decoder, NgramTable } from '../decoding/index.js';
import { OrtTreeModel } from './kv-model.js';
import type { ModelPackage } from './package.js';
import type { SyncSession } from './ort.js';
import { SLOT_BUDGET, SLOT_CANCEL } from './protocol.js';
import { type TextCodec, TextStream } from './text.js';
import {
  type EngineInfo, type FinishReason, type GenerateRequest, type GenerateResult, EngineError,
} from './types.js';

/** Largest tree a step may use (rows); CPU steps stop paying well before this (platform-notes). */
export const MAX_TREE_ROWS = 64;
const PREFILL_CHUNK = 64;
const DEFAULT_MAX_TOKENS = 128;
/**
 * Streamed chunks are coalesced to one per this many ms (the first goes at once). Measured: a
 * message per step woke the main thread so often that on 2 cores it cost 0.2–0.4 ms per step
 * against a 0.5 ms forward pass, and decoding text every step was a quarter of the host time.
 */
export const STREAM_INTERVAL_MS = 20;

export type Emit = (text: string, tokens: number[]) => void;

function check(ok: boolean, message: string): void {
  if (!ok) throw new EngineError('bad_request', message);
}

function validate(req: GenerateRequest): void {
  const int = (x: unknown) => Number.isInteger(x);
  check(req.maxTokens === undefined || (int(req.maxTokens) && req.maxTokens > 0), 'max_tokens must be a positive integer');
  check(req.temperature === undefined || (Number.isFinite(req.temperature) && req.temperature >= 0), 'temperature must be a number >= 0');
  check(req.topP === undefined || (Number.isFinite(req.topP) && req.topP > 0 && req.topP <= 1), 'top_p must be in (0, 1]');
  check(req.topK === undefined || (int(req.topK) && req.topK >= 0), 'top_k must be an integer >= 0');
  check(req.seed === undefined || int(req.seed), 'seed must be an integer');
  check(req.stop === undefined || (Array.isArray(req.stop) && req.stop.every((s) => typeof s === 'string')), 'stop must be a list of strings');
  check(req.mode === undefined || req.mode === 'bita' || req.mode === 'plain', 'mode must be "bita" or "plain"');
}

function loadNgram(path: string): NgramTable {
  try {
    return NgramTable.parse(readFileSync(path));
  } catch (e) {
    throw new EngineError('package_invalid', `${path}: ${(e as Error).message}`);
  }
}

export class Generator {
  private readonly model: OrtTreeModel;
  private readonly decoder: Decoder;
  private readonly hasAdapters: boolean;

  constructor(
    private readonly pkg: ModelPackage,
    session: SyncSession,
    private readonly codec: TextCodec,
    private readonly shared: Int32Array,
  ) {
    const M = pkg.manifest.bita?.mask_token_ids.length ?? 0;
    this.hasAdapters = M > 0;
    this.model = new OrtTreeModel(session, pkg.manifest, Math.max(MAX_TREE_ROWS, PREFILL_CHUNK + M));
    const ngram = pkg.manifest.drafts?.ngram;
    this.decoder = new Decoder(this.model, {
      maxRows: MAX_TREE_ROWS,
      budget: Atomics.load(shared, SLOT_BUDGET),
      prefillChunk: PREFILL_CHUNK,
      ngram: ngram ? loadNgram(join(pkg.dir, ngram.file)) : null,
    });
  }

  info(): EngineInfo {
    const m = this.pkg.manifest;
    return {
      model: m.name,
      contextLength: m.architecture.max_positions,
      vocabSize: m.architecture.vocab_size,
      bita: this.hasAdapters,
      treeBudget: Atomics.load(this.shared, SLOT_BUDGET),
    };
  }

  run(id: number, req: GenerateRequest, emit: Emit): GenerateResult {
    const t0 = performance.now();
    validate(req);
    const prompt = this.codec.encodePrompt(req);
    const maxPositions = this.model.maxPositions;
    if (prompt.length >= maxPositions) {
      throw new EngineError('prompt_too_long', `prompt is ${prompt.length} tokens; the model's context is ${maxPositions} (at most ${maxPositions - 1} leave room to generate)`);
    }
    const maxTokens = req.maxTokens ?? DEFAULT_MAX_TOKENS;
    const eos = this.codec.eosId;
    const text = new TextStream(this.codec, req.stop ?? [], prompt[prompt.length - 1] ?? null);
    const out: number[] = [];
    const histogram: number[] = [];
    const dec = this.decoder;
    const times = this.model.times;
    let finish: FinishReason | null = null;

    // Streaming: one chunk per STREAM_INTERVAL_MS (the first at once, for TTFT). Text is decoded
    // per step only when stop sequences need it, else once per chunk.
    const stops = (req.stop ?? []).length > 0;
    let pendingIds: number[] = []; // committed, not yet decoded (no stop sequences)
    let pendingTokens: number[] = []; // committed, not yet emitted
    let pendingText = '';
    let lastEmit = -Infinity;
    const flush = (now: number): void => {
      if (pendingIds.length) pendingText += text.push(pendingIds);
      if (pendingText || pendingTokens.length) emit(pendingText, pendingTokens);
      pendingIds = [];
      pendingTokens = [];
      pendingText = '';
      lastEmit = now;
    };
    // Commits one step's tokens, cut at EOS / maxTokens.
    const take = (tokens: Int32Array, count: number): void => {
      const fresh: number[] = [];
      for (let i = 0; i < count && !finish; i++) {
        if (tokens[i] === eos) finish = 'eos';
        else {
          fresh.push(tokens[i]);
          out.push(tokens[i]);
          if (out.length >= maxTokens) finish = 'length';
        }
      }
      for (const x of fresh) pendingTokens.push(x);
      if (stops) {
        pendingText += text.push(fresh);
        if (text.stopped) finish = 'stop';
      } else {
        for (const x of fresh) pendingIds.push(x);
      }
      const now = performance.now();
      if (now - lastEmit >= STREAM_INTERVAL_MS) flush(now);
    };

    dec.setBudget(Atomics.load(this.shared, SLOT_BUDGET));
    const first = dec.start(prompt, {
      // Tree decoding also pays without adapters: context and n-gram drafts need no extra weights.
      mode: req.mode ?? 'bita',
      temperature: req.temperature ?? 0,
      topK: req.topK ?? 0,
      topP: req.topP ?? 1,
      seed: req.seed ?? 0,
    });
    const prefillMs = performance.now() - t0;
    take(first.tokens, first.count);
    const ttftMs = performance.now() - t0;

    let steps = 0;
    let rows = 0;
    const bySource = { mask: 0, context: 0, ngram: 0 };
    const loopStart = performance.now();
    const runBefore = times.runMs;
    while (!finish) {
      if (dec.contextFull) {
        finish = 'length';
        break;
      }
      if (Atomics.load(this.shared, SLOT_CANCEL) === id) {
        Atomics.store(this.shared, SLOT_CANCEL, 0);
        finish = 'cancelled';
        break;
      }
      dec.setBudget(Atomics.load(this.shared, SLOT_BUDGET));
      const r = dec.step();
      steps++;
      rows += r.rowsFed;
      bySource.mask += r.acceptedMask;
      bySource.context += r.acceptedContext;
      bySource.ngram += r.acceptedNgram;
      histogram[r.count] = (histogram[r.count] ?? 0) + 1;
      take(r.tokens, r.count);
    }
    const loopMs = performance.now() - loopStart;
    const runMs = times.runMs - runBefore;
    flush(performance.now());
    pendingText = text.flush();
    flush(performance.now());
    const totalMs = performance.now() - t0;
    const n = out.length;
    return {
      text: text.output,
      tokens: out,
      stats: {
        promptTokens: prompt.length,
        outputTokens: n,
        prefillMs,
        ttftMs,
        totalMs,
        tpotMs: n > 1 ? (totalMs - ttftMs) / (n - 1) : 0,
        tokensPerS: totalMs > 0 ? (n * 1000) / totalMs : 0,
        steps,
        meanAcceptedTokens: steps ? (n - 1) / steps : 0,
        acceptedHistogram: Array.from(histogram, (x) => x ?? 0),
        meanRowsPerStep: steps ? rows / steps : 0,
        acceptedBySource: bySource,
        runMs,
        hostMs: loopMs - runMs,
        finishReason: finish ?? 'length',
      },
    };
  }
}
