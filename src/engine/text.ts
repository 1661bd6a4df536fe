/** Text side of the engine: tokenizer, chat template, incremental detokenizer, stop sequences. */
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import type { ModelPackage } from './package.js';
import { type ChatMessage, type GenerateRequest, EngineError } from './types.js';

export interface TextCodec {
  encodePrompt(req: GenerateRequest): number[];
  decode(ids: number[]): string;
  /** A token's text decoded on its own (cached). */
  decodeAlone(id: number): string;
  readonly bosId: number | null;
  readonly eosId: number | null;
}

export function loadCodec(pkg: ModelPackage): TextCodec {
  const m = pkg.manifest;
  const read = (f: string) => JSON.parse(readFileSync(join(pkg.dir, f), 'utf8')) as object;
  let tok: Tokenizer;
  try {
    const cfgFile = m.tokenizer.config;
    const cfg = cfgFile && existsSync(join(pkg.dir, cfgFile)) ? read(cfgFile) : {};
    tok = new Tokenizer(read(m.tokenizer.file), cfg);
  } catch (e) {
    throw new EngineError('package_invalid', `${join(pkg.dir, m.tokenizer.file)}: tokenizer did not load (${(e as Error).message})`);
  }
  const template = m.chat_template ? new Template(m.chat_template) : null;
  const bosId = m.tokenizer.bos_id ?? null;
  const eosId = m.tokenizer.eos_id ?? null;
  const decode = (ids: number[]) => tok.decode(ids, { skip_special_tokens: true });
  const alone: string[] = [];
  const idText = (id: number | null) => (id === null ? '' : (tok.id_to_token(id) ?? ''));

  function render(messages: ChatMessage[]): string {
    if (template) {
      return template.render({ messages, add_generation_prompt: true, bos_token: idText(bosId), eos_token: idText(eosId) });
    }
    // No template (a base model): the conversation is the text to continue.
    return messages.map((x) => x.content).join('\n');
  }

  return {
    bosId,
    eosId,
    encodePrompt(req) {
      if ((req.prompt === undefined) === (req.messages === undefined)) {
        throw new EngineError('bad_request', 'give exactly one of "prompt" or "messages"');
      }
      const text = req.prompt ?? render(req.messages!);
      // The tokenizer turns '' into a lone word-start piece; an empty prompt is just BOS.
      const ids = text === '' ? [] : tok.encode(text, { add_special_tokens: false }).ids;
      const withBos = m.tokenizer.add_bos && bosId !== null && !(template && ids[0] === bosId);
      return withBos ? [bosId!, ...ids] : ids;
    },
    decode,
    decodeAlone(id) {
      return (alone[id] ??= decode([id]));
    },
  };
}

/**
 * Turns committed token ids into text chunks as they arrive. Decodes only the tokens not yet
 * final (anchored on the token before them, so decoders that strip a leading space see context),
 * holds back an incomplete UTF-8 sequence (U+FFFD) and any tail that could begin a stop sequence.
 *
 * Stop sequences: the text ends before the first one to appear, i.e. the one whose last character
 * comes first (of those ending at the same character, the longest). That is where generation
 * stops, and it does not depend on how many tokens each push brings (plain and tree decoding
 * commit different numbers per step). Tokens: `tokensOut` counts the tokens handed out, those whose
 * text the chunks so far hold in full; after a stop, those wholly before it. A token in which a
 * stop sequence begins is dropped with it, though its text before the stop sequence stays.
 */
export class TextStream {
  private readonly ids: number[] = [];
  private readonly first: number; // index in ids of the first generated token
  private readonly stops: string[];
  private text = ''; // all final text so far
  private emitted = 0; // chars of `text` already handed out
  private start = 0; // first id whose text is not final yet
  /** Pairs (n, chars): the final text of ids[0..n) was `chars` long; ascending. */
  private readonly marks: number[] = [];
  private marksOut = 0; // index in marks of the last pair whose text is all handed out
  /** Generated tokens whose text is all in the chunks handed out (after a stop or flush: all kept). */
  tokensOut = 0;
  stopped = false;

  /** contextId: the token before the first streamed one (the prompt's last), so a leading space of
   *  the first generated word survives decoders that strip it at the start of a sequence. */
  constructor(
    private readonly codec: Pick<TextCodec, 'decode' | 'decodeAlone'>,
    stops: string[],
    contextId: number | null = null,
  ) {
    this.stops = stops.filter((s) => s.length > 0); // '' would match everywhere
    if (contextId !== null) {
      this.ids.push(contextId);
      this.start = 1;
    }
    this.first = this.start;
    this.marks.push(this.start, 0);
  }

  /** Adds tokens; returns the text that can be shown now ('' if none). */
  push(tokens: ArrayLike<number>): string {
    for (let i = 0; i < tokens.length; i++) this.ids.push(tokens[i]);
    const tail = this.decodeFrom(this.start, this.ids.length);
    if (!tail.endsWith('\uFFFD')) {
      this.text += tail;
      this.start = this.ids.length;
      this.marks.push(this.start, this.text.length);
    }
    const full = this.start === this.ids.length ? this.text : this.text + tail;
    const at = this.stopAt(full);
    if (at < 0) return this.take(this.text.length - this.heldForStop(this.text));
    this.stopped = true;
    this.text = full.slice(0, at);
    this.ids.length = this.idsBefore(at);
    return this.flush();
  }

  /** Everything not yet handed out, with all tokens kept (call at the end). */
  flush(): string {
    const out = this.take(this.text.length);
    this.tokensOut = this.ids.length - this.first;
    return out;
  }

  get output(): string {
    return this.text;
  }

  private take(upTo: number): string {
    if (upTo <= this.emitted) return '';
    const out = this.text.slice(this.emitted, upTo);
    this.emitted = upTo;
    const { marks } = this;
    while (this.marksOut + 2 < marks.length && marks[this.marksOut + 3] <= upTo) this.marksOut += 2;
    this.tokensOut = marks[this.marksOut] - this.first;
    return out;
  }

  /** Text of ids[from..to), decoded after ids[from - 1] so a leading space survives. */
  private decodeFrom(from: number, to: number): string {
    const anchor = from > 0 ? this.codec.decodeAlone(this.ids[from - 1]) : '';
    return this.codec.decode(this.ids.slice(from > 0 ? from - 1 : 0, to)).slice(anchor.length);
  }

  /**
   * Where `full` is cut, or -1: before the stop sequence whose last character comes first, the
   * longest of those ending there. Occurrences ending within text already searched were found
   * then, so the search starts just before the text handed out.
   */
  private stopAt(full: string): number {
    let at = -1;
    let end = Infinity;
    for (const s of this.stops) {
      const i = full.indexOf(s, Math.max(0, this.emitted - s.length));
      if (i >= 0 && (i + s.length < end || (i + s.length === end && i < at))) {
        at = i;
        end = i + s.length;
      }
    }
    return at;
  }

  /**
   * How many ids have text wholly within text[0..at): from the last mark at or before `at`, one
   * more token at a time while its decoded text still fits (and matches: a decoder may render a
   * shorter run differently). Runs once per stopped generation.
   */
  private idsBefore(at: number): number {
    const { marks } = this;
    let m = marks.length - 2;
    while (marks[m + 1] > at) m -= 2;
    const from = marks[m];
    const base = marks[m + 1];
    let n = from;
    for (let to = from + 1; to <= this.ids.length; to++) {
      const t = this.decodeFrom(from, to);
      if (t.endsWith('\uFFFD')) continue; // an incomplete character: the next token may finish it
      if (base + t.length > at || !this.text.startsWith(t, base)) break;
      n = to;
    }
    return n;
  }

  /** Length of the longest suffix of `t` that is a proper prefix of a stop sequence. */
  private heldForStop(t: string): number {
    let held = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, t.length); n > held; n--) {
        if (t.endsWith(s.slice(0, n))) {
          held = n;
          break;
        }
      }
    }
    return held;
  }
}
