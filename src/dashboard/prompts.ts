/**
 * The prompt box: one generation request to one board over MQTT, its chunks kept until the page's
 * event stream picks them up (the page subscribes after the POST returns, so chunks may come
 * first), and the outcome saved in the dashboard's history as the board's recent requests.
 */
import type { History } from './history.js';
import type { FleetLink, ReplyMessage } from './link.js';

export type StreamEvent = { event: 'chunk'; data: { seq: number; text: string } } | { event: 'final'; data: ReplyMessage };
type Listener = (e: StreamEvent) => void;

interface Stream {
  node: string;
  prompt: string;
  ts: number;
  events: StreamEvent[];
  text: string;
  done: boolean;
  listeners: Set<Listener>;
}

/** Streams remembered after their final reply, for a page that subscribes late. */
const KEEP_FINISHED = 50;
/** A stream's chunks kept for replay; the final reply carries the whole text anyway. */
const MAX_EVENTS = 4096;

export class PromptStreams {
  private readonly streams = new Map<string, Stream>();

  constructor(
    private readonly link: FleetLink,
    private readonly history: History,
    private readonly timeoutMs = 120_000,
  ) {}

  start(node: string, prompt: string, maxTokens: number): string {
    const ts = Date.now();
    let stream!: Stream;
    const txn = this.link.request(node, 'generate', { prompt, max_tokens: maxTokens, stream: true, deadline_ms: this.timeoutMs - 5000 }, (m) => this.onReply(txn, stream, m), this.timeoutMs);
    stream = { node, prompt, ts, events: [], text: '', done: false, listeners: new Set() };
    this.streams.set(txn, stream);
    this.history.savePrompt({ txn, node, ts, prompt, text: '', outcome: null, error: null, stats: null });
    this.trim();
    return txn;
  }

  private onReply(txn: string, s: Stream, m: ReplyMessage): void {
    if (s.done) return;
    let e: StreamEvent;
    if (typeof m.status === 'string') {
      s.done = true;
      const data = (m.data ?? {}) as Record<string, unknown>;
      const err = (m.error ?? null) as { code?: string; message?: string } | null;
      if (typeof data.text === 'string') s.text = data.text;
      this.history.savePrompt({ txn, node: s.node, ts: s.ts, prompt: s.prompt, text: s.text, outcome: m.status, error: err ? `${err.code}: ${err.message}` : null, stats: data.stats ?? null });
      e = { event: 'final', data: m };
    } else {
      const text = typeof m.text === 'string' ? m.text : '';
      s.text += text;
      e = { event: 'chunk', data: { seq: typeof m.seq === 'number' ? m.seq : -1, text } };
    }
    if (s.events.length < MAX_EVENTS || e.event === 'final') s.events.push(e);
    for (const l of s.listeners) l(e);
  }

  /** Replays what came so far, then live events; returns the unsubscribe function, or null for an unknown transaction. */
  subscribe(txn: string, listener: Listener): (() => void) | null {
    const s = this.streams.get(txn);
    if (!s) return null;
    for (const e of s.events) listener(e);
    if (s.done) return () => undefined;
    s.listeners.add(listener);
    return () => s.listeners.delete(listener);
  }

  private trim(): void {
    const finished = [...this.streams].filter(([, s]) => s.done);
    for (const [txn] of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED))) this.streams.delete(txn);
  }
}
