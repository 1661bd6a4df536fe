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

/** Modules a file loads at run time: value imports and re-exports, static or dynamic (`import type` is erased). */
function runtimeImports(file: string): string[] {
  const src = read(file);
  const specs = [...src.matchAll(/^(?:import|export)\s+(?!type\b)[^;]*?\sfrom\s+'([^']+)'/gm), ...src.matchAll(/\bimport\('([^']+)'\)/g)];
  return specs.map((m) => m[1]);
}

t.test('the client loads the daemon\'s limits and topic rules, none of its dependencies but mqtt', async (t) => {
  const seen = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const spec of runtimeImports(file)) {
      if (spec.startsWith('.')) visit(new URL(spec.replace(/\.js$/, '.ts'), new URL(`file:///${file}`)).pathname.slice(1));
      else packages.add(spec);
    }
  };
  visit('src/client/index.ts');
  t.ok(seen.has('src/client/call.ts') && seen.has('src/client/mqtt.ts'), 'the walk follows the client modules');
  t.same([...packages].filter((p) => !p.startsWith('node:')), ['mqtt'], 'mqtt only, loaded by the MQTT transport');
  t.same([...seen].filter((f) => !f.startsWith('src/client/')).sort(), ['src/daemon/protocol/limits.ts', 'src/daemon/transport/topics.ts'], 'daemon modules without imports of their own');
});
