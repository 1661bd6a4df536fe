import t from 'tap';
import { EngineError } from '../src/engine/types.js';

t.test('engine errors carry a code', async (t) => {
  const e = new EngineError('prompt_too_long', 'too long');
  t.equal(e.code, 'prompt_too_long');
  t.ok(e instanceof Error);
});
