/** `import { BitadClient } from 'bitad/client'`: the package's exports map names the built file and the typed source. */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

t.test('bitad/client resolves to the compiled client, with the TypeScript source as its types', async (t) => {
  const resolved = fileURLToPath(import.meta.resolve('bitad/client'));
  t.match(resolved, /\/dist\/src\/client\/index\.js$/, 'npm run build writes src/client/index.ts there (tsconfig.build.json: outDir dist, rootDir .)');
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { exports: Record<string, { types: string }> };
  const types = pkg.exports['./client'].types;
  t.equal(types, './src/client/index.ts');
  t.ok(readFileSync(new URL(`../../${types}`, import.meta.url), 'utf8').includes('export class BitadClient'));
});
