/**
 * `import { BitadClient } from 'bitad/client'`: the package's exports map names the built file and
 * the typed source. Checked from the map and the build config, not by importing dist/, which a
 * fresh checkout has not built yet (`npm run build`, run by `npm start` and the install).
 */
import t from 'tap';
import { readFileSync } from 'node:fs';

const read = (p: string) => readFileSync(new URL(`../../${p}`, import.meta.url), 'utf8');

t.test('bitad/client maps to the compiled client, with the TypeScript source as its types', async (t) => {
  const pkg = JSON.parse(read('package.json')) as { name: string; exports: Record<string, { types: string; default: string }> };
  t.equal(pkg.name, 'bitad');
  const entry = pkg.exports['./client'];
  t.equal(entry.types, './src/client/index.ts');
  t.ok(read(entry.types).includes('export class BitadClient'), 'the types entry is the client source');
  const build = JSON.parse(read('tsconfig.build.json')) as { compilerOptions: { outDir: string; rootDir: string }; include: string[] };
  t.same(build.compilerOptions, { outDir: 'dist', rootDir: '.' });
  t.ok(build.include.includes('src/**/*.ts'), 'the build compiles src/');
  const compiled = `./${build.compilerOptions.outDir}/${entry.types.slice(2).replace(/\.ts$/, '.js')}`;
  t.equal(entry.default, compiled, 'the default entry is where npm run build writes src/client/index.ts');
});
