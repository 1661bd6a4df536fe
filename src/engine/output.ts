/**
 * What a generation commits and streams: tokens cut at EOS / max_tokens / stop sequences, and the
 * chunks the caller sees, coalesced to one per STREAM_INTERVAL_MS.
 */
import { type TextCodec, TextStream } from './text.js';
import type { FinishReason } from './types.js';

/**
 * Streamed chunks are coalesced to one per this many ms (the first goes at once). Measured: a
 * message per step woke the main thread so often that on 2 cores it cost 0.2–0.4 ms per step
 * against a 0.5 ms forward pass, and decoding text every step was a quarter of the host time.
 */
export const STREAM_INTERVAL_MS = 20;

export type Emit = (text: string, tokens: number[]) => void;

export class OutputStream {
  /** Committed output tokens (EOS excluded); after a stop sequence, those wholly before it. */
  readonly tokens: number[] = [];
  finish: FinishReason | null = null;
  private readonly text: TextStream;
  private readonly eos: number | null;
  /** Text is decoded per step only when stop sequences need it, else once per chunk. */
  private readonly stops: boolean;
  private pendingIds: number[] = []; // committed, not yet decoded (no stop sequences)
  private sentTokens = 0; // tokens already emitted
  private pendingText = '';
  private lastEmit = -Infinity;

  constructor(
    codec: TextCodec,
    stop: string[],
    lastPromptToken: number | null,
    private readonly maxTokens: number,
    private readonly emit: Emit,
  ) {
    this.text = new TextStream(codec, stop, lastPromptToken);
    this.stops = stop.length > 0;
    this.eos = codec.eosId;
  }

  /** Commits one step's tokens, cut at EOS / maxTokens / a stop sequence. */
  take(tokens: Int32Array, count: number): void {
    const fresh: number[] = [];
    for (let i = 0; i < count && !this.finish; i++) {
      if (tokens[i] === this.eos) this.finish = 'eos';
      else {
        fresh.push(tokens[i]);
        this.tokens.push(tokens[i]);
        if (this.tokens.length >= this.maxTokens) this.finish = 'length';
      }
    }
    if (this.stops) {
      this.pendingText += this.text.push(fresh);
      if (this.text.stopped) {
        this.finish = 'stop';
        this.tokens.length = this.text.tokensOut; // the text stream was pushed exactly these tokens
      }
    } else {
      for (const x of fresh) this.pendingIds.push(x);
    }
    const now = performance.now();
    if (now - this.lastEmit >= STREAM_INTERVAL_MS) this.flush(now);
  }

  /** Emits what is pending and the text held back for a possible stop sequence; the final text. */
  end(): string {
    this.flush(performance.now());
    this.pendingText = this.text.flush();
    this.flush(performance.now());
    return this.text.output;
  }

  /** A chunk carries the tokens whose text it completes (TextStream.tokensOut), so tokens held
   *  back with text that may begin a stop sequence are never sent when that text is cut. */
  private flush(now: number): void {
    if (this.pendingIds.length) this.pendingText += this.text.push(this.pendingIds);
    const tokens = this.tokens.slice(this.sentTokens, this.text.tokensOut);
    if (this.pendingText || tokens.length) this.emit(this.pendingText, tokens);
    this.sentTokens += tokens.length;
    this.pendingIds = [];
    this.pendingText = '';
    this.lastEmit = now;
  }
}
