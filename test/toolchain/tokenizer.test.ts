// tokenizer.json written by bitatool encodes exactly like sentencepiece in @huggingface/tokenizers.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { py, tempDir } from './helpers.js';

type Case = { text: string; ids: number[]; decoded: string };
const N = 1200;

t.test('converted tokenizers encode TinyStories exactly like sentencepiece', async (t) => {
  const dir = tempDir(t);
  py(['test/toolchain/py/tok_vectors.py', dir, String(N)]);
  const cases = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8')) as Case[];
  t.ok(cases.length >= 1000, `${cases.length} lines`);
  const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
  for (const source of ['from_model.json', 'from_bin.json']) {
    const tok = new Tokenizer(JSON.parse(readFileSync(join(dir, source), 'utf8')), config);
    let encoded = 0;
    let decoded = 0;
    let roundTrip = 0;
    const bad: string[] = [];
    for (const c of cases) {
      const ids = tok.encode(c.text, { add_special_tokens: false }).ids;
      if (ids.join(',') === c.ids.join(',')) encoded++;
      else if (bad.length < 3) bad.push(`${JSON.stringify(c.text)}: ${ids} vs ${c.ids}`);
      if (tok.decode(c.ids) === c.decoded) decoded++;
      // sentencepiece (remove_extra_whitespaces) drops leading/trailing spaces and collapses runs.
      if (tok.decode(ids) === c.text.replace(/^ +| +$/g, '').replace(/ {2,}/g, ' ')) roundTrip++;
    }
    t.equal(encoded, cases.length, `${source}: ids equal sentencepiece's on every line ${bad.join(' | ')}`);
    t.equal(decoded, cases.length, `${source}: decode equals sentencepiece's decode on every line`);
    t.equal(roundTrip, cases.length, `${source}: every line decodes back to its (space-normalised) text`);
    t.same(tok.encode('Once upon a time').ids, [1, 403, 407, 261, 378], `${source}: adds BOS like llama2.c`);
  }
});
