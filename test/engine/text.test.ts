import t from 'tap';
import { BUNDLED_MODEL } from '../../bench/data.js';
import { loadPackage } from '../../src/engine/package.js';
import { loadCodec, TextStream } from '../../src/engine/text.js';
import { OutputStream, STREAM_INTERVAL_MS } from '../../src/engine/output.js';

const codec = loadCodec(loadPackage(BUNDLED_MODEL));
const story = `Once upon a time, the little dog was very happy. He said, "Let's play!" They ran to the park.`;

function stream(prompt: string, rest: string, stops: string[] = [], per = 1) {
  const p = codec.encodePrompt({ prompt });
  const ids = codec.encodePrompt({ prompt: prompt + rest }).slice(p.length);
  const s = new TextStream(codec, stops, p[p.length - 1]);
  const chunks: string[] = [];
  for (let i = 0; i < ids.length && !s.stopped; i += per) chunks.push(s.push(ids.slice(i, i + per)));
  chunks.push(s.flush());
  return { chunks, text: chunks.join(''), output: s.output };
}

t.test('streamed text continues the prompt exactly, leading space included', async (t) => {
  for (const per of [1, 3]) {
    const { text, output } = stream('The little dog', ` was very happy. He said, "Let's play!"`, [], per);
    t.equal(text, ` was very happy. He said, "Let's play!"`, `${per} token(s) per push`);
    t.equal(output, text);
  }
});

t.test('a stop sequence ends the text before it, even when split across pushes', async (t) => {
  const { text, chunks } = stream('Once upon a time', story.slice('Once upon a time'.length), ['He said']);
  t.equal(text, ', the little dog was very happy. ');
  t.notOk(chunks.some((c) => c.includes('He')), 'no chunk leaked the start of the stop sequence');
});

t.test('without a match, text held back for a possible stop sequence is released at the end', async (t) => {
  const { text } = stream('Once upon a time', ', the dog ran to the par', ['park bench']);
  t.equal(text, ', the dog ran to the par');
});

t.test('with several stop strings, the text ends before the first one to appear, whatever the list order', async (t) => {
  const rest = ' upon a time, there was';
  const cases: [string[], string][] = [
    [['time', ' a'], ' upon'],
    [[' a', 'time'], ' upon'],
    ['abcdefghijklmnop'.split(''), ' u'], // "p" completes before "o" and "n"
    [['upon a time', 'on'], ' up'], // "on" is complete before the longer string that starts earlier
    [['n', 'pon'], ' u'], // both end at the same character: cut before the longer
  ];
  for (const [stops, want] of cases) {
    for (const per of [1, 3]) {
      const { text, chunks } = stream('Once', rest, stops, per);
      t.equal(text, want, `${JSON.stringify(stops)}, ${per} token(s) per push`);
      t.notOk(chunks.some((c, i) => stops.some((s) => chunks.slice(0, i + 1).join('').includes(s))), 'no chunk holds a stop string');
    }
  }
});

/** Commits `rest`'s tokens `per` per step through an OutputStream, a stream interval apart, so
 *  every step may emit a chunk. */
async function output(prompt: string, rest: string, stops: string[], per: number) {
  const p = codec.encodePrompt({ prompt });
  const ids = codec.encodePrompt({ prompt: prompt + rest }).slice(p.length);
  const chunks: { text: string; tokens: number[] }[] = [];
  const out = new OutputStream(codec, stops, p[p.length - 1], 1000, (text, tokens) => chunks.push({ text, tokens: [...tokens] }));
  for (let i = 0; i < ids.length && !out.finish; i += per) {
    out.take(Int32Array.from(ids.slice(i, i + per)), Math.min(per, ids.length - i));
    await new Promise((r) => setTimeout(r, STREAM_INTERVAL_MS + 2));
  }
  const text = out.end();
  return { ids, text, tokens: out.tokens, finish: out.finish, chunks };
}

t.test('a stop string drops its tokens and those after it; chunks never carry them', async (t) => {
  // [" upon", " a", " time", ",", " there", " was"]: " time" is held back as the start of " time,".
  const story = ' upon a time, there was';
  // " the", " c", "a", "f", "é", " ", then the emoji's four byte tokens, " was", ...
  const bytes = ' the café 😀 was open';
  const cases: [string, string[], string, number][] = [
    [story, [' a'], ' upon', 1],
    [story, [' time,'], ' upon a', 2],
    [story, ['p'], ' u', 0], // "p" starts inside " upon": that token goes too; text keeps " u"
    [bytes, [' was'], ' the café 😀', 10],
    [bytes, [' 😀 w'], ' the café', 5], // held back over the emoji's incomplete bytes
  ];
  for (const [rest, stops, want, kept] of cases) {
    for (const per of [1, 3]) {
      const r = await output('Once', rest, stops, per);
      const what = `${JSON.stringify(stops)}, ${per} per step`;
      t.equal(r.finish, 'stop', what);
      t.equal(r.text, want, `${what}: text`);
      t.same(r.tokens, r.ids.slice(0, kept), `${what}: tokens wholly before the stop string`);
      t.equal(r.chunks.map((c) => c.text).join(''), r.text, `${what}: chunks add up to the text`);
      t.same(r.chunks.flatMap((c) => c.tokens), r.tokens, `${what}: chunks add up to the tokens`);
    }
  }
});

t.test('without stop strings, every committed token is reported, EOS excluded', async (t) => {
  const r = await output('Once', ' upon a time, there was', [], 2);
  t.equal(r.finish, null);
  t.equal(r.text, ' upon a time, there was');
  t.same(r.tokens, r.ids);
  t.same(r.chunks.flatMap((c) => c.tokens), r.ids);
});
