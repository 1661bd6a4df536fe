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
 */
export class TextStream {
  private readonly ids: number[] = [];
  private text = ''; // all final text so far
  private emitted = 0; // chars of `text` already handed out
  private start = 0; // first id whose text is not final yet
  stopped = false;

  /** contextId: the token before the first streamed one (the prompt's last), so a leading space of
   *  the first generated word survives decoders that strip it at the start of a sequence. */
  constructor(
    private readonly codec: Pick<TextCodec, 'decode' | 'decodeAlone'>,
    private readonly stops: string[],
    contextId: number | null = null,
  ) {
    if (contextId !== null) {
      this.ids.push(contextId);
      this.start = 1;
    }
  }

  /** Adds tokens; returns the text that can be shown now ('' if none). */
  push(tokens: ArrayLike<number>): string {
    for (let i = 0; i < tokens.length; i++) this.ids.push(tokens[i]);
    const anchor = this.start > 0 ? this.codec.decodeAlone(this.ids[this.start - 1]) : '';
    const tail = this.codec.decode(this.ids.slice(this.start > 0 ? this.start - 1 : 0)).slice(anchor.length);
    if (!tail.endsWith('\uFFFD')) {
      this.text += tail;
      this.start = this.ids.length;
    }
    const full = this.start === this.ids.length ? this.text : this.text + tail;
    for (const s of this.stops) {
      const at = s ? full.indexOf(s, Math.max(0, this.emitted - s.length)) : -1;
      if (at >= 0) {
        this.stopped = true;
        this.text = full.slice(0, at);
        return this.take(this.text.length);
      }
    }
    return this.take(this.text.length - this.heldForStop(this.text));
  }

  /** Everything not yet handed out (call at the end). */
  flush(): string {
    return this.take(this.text.length);
  }

  get output(): string {
    return this.text;
  }

  private take(upTo: number): string {
    if (upTo <= this.emitted) return '';
    const out = this.text.slice(this.emitted, upTo);
    this.emitted = upTo;
    return out;
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
