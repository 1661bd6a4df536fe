import t from 'tap';
import { BUNDLED_MODEL } from '../../bench/data.js';
import { loadPackage } from '../../src/engine/package.js';
import { loadCodec, TextStream } from '../../src/engine/text.js';

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
