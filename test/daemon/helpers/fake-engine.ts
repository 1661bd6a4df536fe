/**
 * A model-free Engine for transport tests and benchmarks (config `model.engine: fake`).
 * It behaves like the real one where the daemon can observe it: whitespace tokens, a context limit
 * (`prompt_too_long`), streamed chunks of 1–3 tokens per "step" with a configurable delay,
 * AbortSignal honoured between and during steps, stop strings, and measured stats.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BoardLoad, TreePolicy } from '../../../src/engine/load.js';
import {
  EngineError,
  type Engine,
  type EngineInfo,
  type GenerateOptions,
  type GenerateRequest,
  type GenerateResult,
  type FinishReason,
} from '../../../src/engine/types.js';

const WORDS = ['once', 'upon', 'a', 'time', 'there', 'was', 'little', 'girl', 'named', 'Lily', 'she', 'loved', 'to', 'play', 'in', 'the', 'park', 'with', 'her', 'dog', 'one', 'day', 'sun', 'was', 'bright', 'and', 'happy', '.'];
const EOS = 2;

export interface FakeEngineOptions {
  contextLength?: number; // default 256 tokens
  chunkDelayMs?: number; // delay per step; 0 still yields to the event loop
  vocabSize?: number;
  treeBudget?: number;
}

export class FakeEngine implements Engine {
  /** Number of generate() calls that started (duplicate-delivery tests count these). */
  calls = 0;
  active = 0;
  /** When set, every generate() fails with this error (a broken model or a dead worker). */
  failWith: EngineError | null = null;
  private treeBudget: number;
  /** What the daemon told the tree sizing last (tests read these). */
  treePolicy: TreePolicy = 'fixed';
  load: BoardLoad | null = null;
  private closed = false;
  readonly contextLength: number;
  chunkDelayMs: number;

  constructor(private readonly opts: FakeEngineOptions = {}) {
    this.contextLength = opts.contextLength ?? 256;
    this.chunkDelayMs = opts.chunkDelayMs ?? 2;
    this.treeBudget = opts.treeBudget ?? 16;
  }

  info(): EngineInfo {
    const active = this.treePolicy === 'fixed' ? 'fixed' : 'throughput';
    const tree = { policy: this.treePolicy, active, rows: this.treeBudget, minRows: 1, maxRows: 32, reason: `fake engine: ${this.treeBudget} rows`, changes: 0 } as const;
    return { model: 'fake', contextLength: this.contextLength, vocabSize: this.opts.vocabSize ?? 512, bita: true, treeBudget: this.treeBudget, fineTuned: null, tree };
  }

  setTreeBudget(rows: number): void {
    this.treeBudget = rows;
  }

  setTreePolicy(policy: TreePolicy): void {
    this.treePolicy = policy;
  }

  setLoad(load: BoardLoad): void {
    this.load = load;
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Whitespace tokenizer with stable ids (FNV-1a of the word). */
  tokenize(text: string): number[] {
    const vocab = this.opts.vocabSize ?? 512;
    return text
      .split(/\s+/)
      .filter((w) => w !== '')
      .map((w) => {
        let h = 0x811c9dc5;
        for (let i = 0; i < w.length; i++) h = Math.imul(h ^ w.charCodeAt(i), 0x01000193);
        return 3 + ((h >>> 0) % (vocab - 3));
      });
  }

  async generate(req: GenerateRequest, opts: GenerateOptions = {}): Promise<GenerateResult> {
    if (this.closed) throw new EngineError('model_error', 'engine closed');
    if ((req.prompt === undefined) === (req.messages === undefined)) {
      throw new EngineError('bad_request', 'exactly one of prompt/messages');
    }
    this.calls++;
    if (this.failWith) throw this.failWith;
    this.active++;
    try {
      return await this.run(req, opts);
    } finally {
      this.active--;
    }
  }

  private async run(req: GenerateRequest, opts: GenerateOptions): Promise<GenerateResult> {
    const t0 = performance.now();
    const text = req.prompt ?? req.messages!.map((m) => `${m.role}: ${m.content}`).join('\n');
    const prompt = this.tokenize(text);
    if (prompt.length >= this.contextLength) {
      throw new EngineError('prompt_too_long', `prompt has ${prompt.length} tokens, context is ${this.contextLength}`);
    }
    const maxTokens = Math.min(req.maxTokens ?? 128, this.contextLength - prompt.length);
    const signal = opts.signal;
    const out: number[] = [];
    let outText = '';
    let steps = 0;
    let ttft = 0;
    const histogram = [0, 0, 0, 0];
    let finish: FinishReason = 'length';
    let w = prompt.length % WORDS.length; // the "story" continues from the prompt length
    while (out.length < maxTokens) {
      if (signal?.aborted) throw new EngineError('cancelled', 'generation cancelled');
      await this.step(signal);
      const n = Math.min(1 + (steps % 3), maxTokens - out.length); // 1–3 committed tokens per step
      const words = Array.from({ length: n }, () => WORDS[w++ % WORDS.length]);
      const tokens = this.tokenize(words.join(' '));
      steps++;
      histogram[n]++;
      const chunkText = ' ' + words.join(' '); // SentencePiece-style: a word carries its leading space
      out.push(...tokens);
      outText += chunkText;
      if (steps === 1) ttft = performance.now() - t0;
      opts.onChunk?.({ text: chunkText, tokens });
      const stop = req.stop?.find((s) => outText.includes(s));
      if (stop) {
        outText = outText.slice(0, outText.indexOf(stop));
        finish = 'stop';
        break;
      }
      if (tokens.includes(EOS)) {
        finish = 'eos';
        break;
      }
    }
    const totalMs = performance.now() - t0;
    return {
      text: outText,
      tokens: out,
      stats: {
        promptTokens: prompt.length,
        outputTokens: out.length,
        prefillMs: ttft,
        ttftMs: ttft,
        totalMs,
        tpotMs: out.length > 1 ? (totalMs - ttft) / (out.length - 1) : 0,
        tokensPerS: totalMs > 0 ? (out.length * 1000) / totalMs : 0,
        steps,
        meanAcceptedTokens: steps > 0 ? out.length / steps : 0,
        acceptedHistogram: histogram,
        meanRowsPerStep: this.treeBudget,
        treePolicy: this.treePolicy,
        acceptedBySource: { mask: 0, context: 0, ngram: 0 },
        runMs: 0,
        hostMs: totalMs,
        finishReason: finish,
      },
    };
  }

  private async step(signal?: AbortSignal): Promise<void> {
    if (this.chunkDelayMs <= 0) {
      await new Promise<void>((r) => setImmediate(r));
      return;
    }
    try {
      await sleep(this.chunkDelayMs, undefined, { signal });
    } catch {
      throw new EngineError('cancelled', 'generation cancelled');
    }
  }
}
