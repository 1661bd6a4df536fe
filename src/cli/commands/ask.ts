/** `bitad ask "<prompt>"`: stream one answer from the running daemon over its Unix socket (through `bitad/client`). */
import { BitadClient, BitadError, type GenerationResult } from '../../client/index.js';

export const askHelp = `Usage: bitad ask "<prompt>" [options]

Streams an answer from the running daemon through its Unix socket.
  --config <file>        config file (to find the socket; default BITAD_CONFIG or built-in defaults)
  --socket <path>        socket path (default: the config's socket.path, or /run/bitad/bitad.sock
                         when bitad runs as the systemd unit)
  --max-tokens <n>       tokens to generate (daemon default: limits.default_max_tokens)
  --temperature <t>      0 = greedy (default)
  --chat                 send the prompt as one user message (request kind "chat")
  --json                 print the final reply as JSON instead of text + a stats line`;

export interface AskOptions {
  socket: string;
  prompt: string;
  maxTokens?: number;
  temperature?: number;
  chat?: boolean;
  json?: boolean;
}

export async function ask(o: AskOptions): Promise<number> {
  const client = await BitadClient.socket(o.socket);
  // Ctrl-C aborts the request: the client sends the daemon a cancel, then the connection closes.
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());
  const params = { maxTokens: o.maxTokens, temperature: o.temperature };
  const g = o.chat
    ? client.chat({ messages: [{ role: 'user', content: o.prompt }], ...params }, { signal: abort.signal })
    : client.generate({ prompt: o.prompt, ...params }, { signal: abort.signal });
  if (!o.json) process.stdout.write(o.chat ? '' : o.prompt);
  let outcome: Outcome;
  try {
    for await (const c of g) if (!o.json) process.stdout.write(c.text);
    outcome = { ok: true, result: await g.result };
  } catch (e) {
    if (!(e instanceof BitadError)) throw e;
    outcome = { ok: false, error: e };
  } finally {
    await client.close();
  }
  if (abort.signal.aborted) return 130;
  return o.json ? printJson(outcome) : printText(outcome);
}

type Outcome = { ok: true; result: GenerationResult } | { ok: false; error: BitadError };

/** The final reply as the daemon sent it (status, data or error). */
function printJson(outcome: Outcome): number {
  const final = outcome.ok
    ? { transaction: outcome.result.transaction, status: 'ok', data: { text: outcome.result.text, tokens: outcome.result.tokens, finish_reason: outcome.result.finishReason, stats: outcome.result.stats } }
    : { transaction: outcome.error.transaction, status: 'error', error: { code: outcome.error.code, message: outcome.error.detail } };
  process.stdout.write(JSON.stringify(final) + '\n');
  return outcome.ok ? 0 : 1;
}

function printText(outcome: Outcome): number {
  process.stdout.write('\n');
  if (!outcome.ok) {
    process.stderr.write(`error ${outcome.error.message}\n`);
    return 1;
  }
  const s = outcome.result.stats;
  const ms = (v: number | null, digits: number) => (v === null ? '-' : v.toFixed(digits));
  process.stderr.write(
    `[${s.output_tokens} tokens, ttft ${ms(s.ttft_ms, 1)} ms, tpot ${ms(s.tpot_ms, 2)} ms, ` +
      `${ms(s.tokens_per_s, 1)} tok/s, ${ms(s.mean_accepted_tokens, 2)} tokens/step, ` +
      `queue ${ms(s.queue_ms, 1)} ms, total ${ms(s.total_ms, 1)} ms, finish ${outcome.result.finishReason}]\n`,
  );
  return 0;
}
