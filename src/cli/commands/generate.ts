/** `bitad generate`: load the engine in this process (no daemon) and stream to the terminal. */
import { loadEngine } from '../../engine/index.js';

export const generateHelp = `Usage: bitad generate "<prompt>" [--model <dir>] [--max-tokens <n>] [--temperature <t>] [--mode bita|plain] [--threads <n>]

Runs the engine directly, without the daemon, and prints the text and decoding statistics.
Default model: the config's model.path (models/tinystories-bita).`;

export interface GenerateOptions {
  model: string;
  prompt: string;
  maxTokens?: number;
  temperature?: number;
  mode?: 'bita' | 'plain';
  threads?: number;
}

export async function generate(o: GenerateOptions): Promise<number> {
  const engine = await loadEngine(o.model, { threads: o.threads });
  try {
    process.stdout.write(o.prompt);
    const r = await engine.generate(
      { prompt: o.prompt, maxTokens: o.maxTokens, temperature: o.temperature, mode: o.mode },
      { onChunk: (c) => process.stdout.write(c.text) },
    );
    const s = r.stats;
    process.stdout.write('\n');
    process.stderr.write(
      `[${s.outputTokens} tokens, ttft ${s.ttftMs.toFixed(1)} ms, tpot ${s.tpotMs.toFixed(2)} ms, ${s.tokensPerS.toFixed(1)} tok/s, ` +
        `${s.meanAcceptedTokens.toFixed(2)} tokens/step, ${s.meanRowsPerStep.toFixed(1)} rows/step (${s.treePolicy}), finish ${s.finishReason}]\n`,
    );
    return 0;
  } finally {
    await engine.close();
  }
}
