/**
 * One generation inside the engine worker: validate, tokenize, prefill, tree steps (their size set
 * by the step hook before each one), stream text, stop on EOS / stop sequence / maxTokens / context
 * end / cancellation, and measure.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Decoder, isGreedy, NgramTable, type GenerationOptions, type StepResult } from '../decoding/index.js';
import { OrtTreeModel, type StepTimes } from './kv-model.js';
import type { ModelPackage } from './package.js';
import type { SyncSession } from './ort.js';
import { OutputStream, type Emit } from './output.js';
import { MAX_TREE_ROWS, SLOT_CANCEL } from './protocol.js';
import type { TextCodec } from './text.js';
import { type EngineInfo, type FinishReason, type GenerateRequest, type GenerateResult, type GenerateStats, EngineError } from './types.js';

const PREFILL_CHUNK = 64;
const DEFAULT_MAX_TOKENS = 128;

/** Sizes each step's tree: the tree sizing (tree-sizing.ts) acts here, before and after every step. */
export interface StepHook {
  /** Sets the decoder's row budget for the next step. */
  before(decoder: Decoder): void;
  /** Learns from the step just taken: `ms` is its wall time, `cached` the KV length before it. */
  after(step: StepResult, ms: number, cached: number, decoder: Decoder): void;
  /** The policy that sized this request's trees (for its stats). */
  readonly policy: string;
}

/** Hands out one StepHook per request; greedy requests may adapt, sampled ones keep a fixed tree. */
export interface Sizing {
  forRequest(greedy: boolean): StepHook;
  /** The budget steps use now and why (engine info, `bitad status`). */
  info(): EngineInfo['tree'];
}

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

function generationOptions(req: GenerateRequest): Required<GenerationOptions> {
  return {
    // Tree decoding also pays without adapters: context and n-gram drafts need no extra weights.
    mode: req.mode ?? 'bita',
    temperature: req.temperature ?? 0,
    topK: req.topK ?? 0,
    topP: req.topP ?? 1,
    seed: req.seed ?? 0,
  };
}

function loadNgram(path: string): NgramTable {
  try {
    return NgramTable.parse(readFileSync(path));
  } catch (e) {
    throw new EngineError('package_invalid', `${path}: ${(e as Error).message}`);
  }
}

/** Per-request step statistics: steps, rows, accepted tokens by source, run vs host time. */
class StepStats {
  steps = 0;
  private rows = 0;
  /** Tokens the steps committed, before the output is cut at EOS / max_tokens / a stop string. */
  private committed = 0;
  private readonly bySource = { mask: 0, context: 0, ngram: 0 };
  private readonly histogram: number[] = [];
  private readonly loopStart = performance.now();
  private readonly runBefore: number;

  constructor(private readonly times: StepTimes) {
    this.runBefore = times.runMs;
  }

  record(r: StepResult): void {
    this.steps++;
    this.rows += r.rowsFed;
    this.committed += r.count;
    this.bySource.mask += r.acceptedMask;
    this.bySource.context += r.acceptedContext;
    this.bySource.ngram += r.acceptedNgram;
    this.histogram[r.count] = (this.histogram[r.count] ?? 0) + 1;
  }

  /**
   * The step part of GenerateStats (call once, when the loop ended). The mean counts what the
   * verifier committed, as the Prometheus accepted counters do: the output kept after a stop cut
   * can be smaller than the first token plus the steps' tokens, and made the mean negative.
   */
  result(): Pick<GenerateStats, 'steps' | 'meanAcceptedTokens' | 'acceptedHistogram' | 'meanRowsPerStep' | 'acceptedBySource' | 'runMs' | 'hostMs'> {
    const { steps } = this;
    const runMs = this.times.runMs - this.runBefore;
    return {
      steps,
      meanAcceptedTokens: steps ? this.committed / steps : 0,
      acceptedHistogram: Array.from(this.histogram, (x) => x ?? 0),
      meanRowsPerStep: steps ? this.rows / steps : 0,
      acceptedBySource: this.bySource,
      runMs,
      hostMs: performance.now() - this.loopStart - runMs,
    };
  }
}

export class Generator {
  readonly model: OrtTreeModel;
  readonly decoder: Decoder;
  private readonly hasAdapters: boolean;

  constructor(
    private readonly pkg: ModelPackage,
    session: SyncSession,
    private readonly codec: TextCodec,
    private readonly shared: Int32Array,
    private readonly sizing: Sizing,
  ) {
    const M = pkg.manifest.bita?.mask_token_ids.length ?? 0;
    this.hasAdapters = M > 0;
    this.model = new OrtTreeModel(session, pkg.manifest, Math.max(MAX_TREE_ROWS, PREFILL_CHUNK + M));
    const ngram = pkg.manifest.drafts?.ngram;
    this.decoder = new Decoder(this.model, {
      maxRows: MAX_TREE_ROWS,
      prefillChunk: PREFILL_CHUNK,
      ngram: ngram ? loadNgram(join(pkg.dir, ngram.file)) : null,
    });
  }

  info(): EngineInfo {
    const m = this.pkg.manifest;
    const tree = this.sizing.info();
    return {
      model: m.name,
      contextLength: m.architecture.max_positions,
      vocabSize: m.architecture.vocab_size,
      bita: this.hasAdapters,
      treeBudget: tree.rows,
      fineTuned: m.fine_tuned ?? null,
      tree,
    };
  }

  run(id: number, req: GenerateRequest, emit: Emit): GenerateResult {
    const t0 = performance.now();
    validate(req);
    const prompt = this.encode(req);
    const out = new OutputStream(this.codec, req.stop ?? [], prompt[prompt.length - 1] ?? null, req.maxTokens ?? DEFAULT_MAX_TOKENS, emit);
    const gen = generationOptions(req);
    const hook = this.sizing.forRequest(isGreedy(gen));
    const first = this.decoder.start(prompt, gen);
    const prefillMs = performance.now() - t0;
    out.take(first.tokens, first.count);
    const ttftMs = performance.now() - t0;
    const steps = new StepStats(this.model.times);
    this.loop(id, out, hook, steps);
    const text = out.end();
    const totalMs = performance.now() - t0;
    const n = out.tokens.length;
    return {
      text,
      tokens: out.tokens,
      stats: {
        promptTokens: prompt.length,
        outputTokens: n,
        prefillMs,
        ttftMs,
        totalMs,
        tpotMs: n > 1 ? (totalMs - ttftMs) / (n - 1) : 0,
        tokensPerS: totalMs > 0 ? (n * 1000) / totalMs : 0,
        ...steps.result(),
        treePolicy: gen.mode === 'plain' ? 'plain' : hook.policy,
        finishReason: out.finish ?? 'length',
      },
    };
  }

  private encode(req: GenerateRequest): number[] {
    const prompt = this.codec.encodePrompt(req);
    const maxPositions = this.model.maxPositions;
    if (prompt.length >= maxPositions) {
      throw new EngineError('prompt_too_long', `prompt is ${prompt.length} tokens; the model's context is ${maxPositions} (at most ${maxPositions - 1} leave room to generate)`);
    }
    return prompt;
  }

  /** Tree steps until the output stream finishes, the context is full or the request is cancelled. */
  private loop(id: number, out: OutputStream, hook: StepHook, stats: StepStats): void {
    const dec = this.decoder;
    while (!out.finish) {
      if (dec.contextFull) {
        out.finish = 'length';
        break;
      }
      if (Atomics.load(this.shared, SLOT_CANCEL) === id) {
        Atomics.store(this.shared, SLOT_CANCEL, 0);
        out.finish = 'cancelled' satisfies FinishReason;
        break;
      }
      hook.before(dec);
      const cached = dec.length - 1;
      const s0 = performance.now();
      const r = dec.step();
      hook.after(r, performance.now() - s0, cached, dec);
      stats.record(r);
      out.take(r.tokens, r.count);
    }
  }
}
