/** `bitad ask "<prompt>"`: stream one answer from the running daemon over its Unix socket. */
import { SocketClient } from '../socket-client.js';

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
  const client = await SocketClient.connect(o.socket);
  // Ctrl-C closes the connection, which cancels the request in the daemon.
  process.once('SIGINT', () => {
    client.close();
    process.exit(130);
  });
  const body: Record<string, unknown> = o.chat ? { messages: [{ role: 'user', content: o.prompt }] } : { prompt: o.prompt };
  if (o.maxTokens !== undefined) body.max_tokens = o.maxTokens;
  if (o.temperature !== undefined) body.temperature = o.temperature;
  if (!o.json) process.stdout.write(o.chat ? '' : o.prompt);
  const final = await client.request(o.chat ? 'chat' : 'generate', body, (c) => {
    if (!o.json) process.stdout.write(c.text);
  });
  client.close();
  if (o.json) {
    process.stdout.write(JSON.stringify(final) + '\n');
    return final.status === 'ok' ? 0 : 1;
  }
  process.stdout.write('\n');
  if (final.status === 'error') {
    process.stderr.write(`error ${final.error.code}: ${final.error.message}\n`);
    return 1;
  }
  const s = (final.data as { stats: Record<string, number>; finish_reason: string }).stats;
  const finish = (final.data as { finish_reason: string }).finish_reason;
  process.stderr.write(
    `[${s.output_tokens} tokens, ttft ${s.ttft_ms.toFixed(1)} ms, tpot ${s.tpot_ms.toFixed(2)} ms, ` +
      `${s.tokens_per_s.toFixed(1)} tok/s, ${s.mean_accepted_tokens.toFixed(2)} tokens/step, ` +
      `queue ${s.queue_ms.toFixed(1)} ms, total ${s.total_ms.toFixed(1)} ms, finish ${finish}]\n`,
  );
  return 0;
}
