/** Evaluation data shared by benchmarks and tests: read from ../shared/data, never copied here. */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const SHARED_DATA = process.env.BITAD_SHARED_DATA ?? resolve(REPO_ROOT, '../shared/data');
export const BUNDLED_MODEL = join(REPO_ROOT, 'models/tinystories-bita');
export const STORIES260K_PACKAGE = join(REPO_ROOT, 'models/stories260K-bita/package');

/**
 * Held-out TinyStories text: the last 10 % of tinystories_val_subset.txt, cut at a blank line
 * (the toolchain trains on the first 90 %; models/bitatool uses the same split).
 */
export function heldOutText(): string {
  const text = readFileSync(join(SHARED_DATA, 'text/tinystories_val_subset.txt'), 'utf8');
  const cut = text.indexOf('\n\n', Math.floor(text.length * 0.9));
  return text.slice(cut + 2);
}

/** Story openings from held-out text: the first `words` words of each paragraph that starts one. */
export function storyPrompts(count: number, words = 6): string[] {
  const out: string[] = [];
  for (const para of heldOutText().split(/\n\s*\n/)) {
    const w = para.trim().split(/\s+/);
    if (w.length < words * 3) continue;
    out.push(w.slice(0, words).join(' '));
    if (out.length === count) break;
  }
  if (out.length < count) throw new Error(`only ${out.length} prompts in held-out text (wanted ${count})`);
  return out;
}
