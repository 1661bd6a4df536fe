// The check's closing report: stage times, what each stage showed, a summary line and (--json) a
// last-line JSON object. Reads the files the stages left in WORK ("stages": one name:seconds:rc line
// per stage, in the order they ended). Exits 1 unless every stage ran and passed.
//   node summary.mjs WORK JSON(0|1) WALL_SECONDS
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const [work, json, wall] = process.argv.slice(2);
const read = (f) => (existsSync(join(work, f)) ? readFileSync(join(work, f), 'utf8').trim() : null);
const readJson = (f) => {
  try {
    return JSON.parse(read(f) ?? 'null');
  } catch {
    return null;
  }
};

const EXPECTED = ['host', 'root', 'sqlite', 'project', 'golden', 'daemon', 'install', 'tests', 'answers'];
const stages = (read('stages') ?? '').split('\n').filter(Boolean).map((s) => {
  const [name, secs, rc] = s.split(':');
  return { name, seconds: Number(secs), ok: rc === '0' };
});
const golden = readJson('golden.json');
const testsLine = read('tests-summary.txt') ?? '';
const count = (k) => Number(testsLine.match(new RegExp(`${k}: (\\d+)`))?.[1] ?? 0);
const installChecks = (read('install-checks.txt') ?? '').split('\n').filter(Boolean);
const result = {
  // Every stage ran and passed: an interrupted run is not a pass.
  ok: EXPECTED.every((n) => stages.some((s) => s.name === n && s.ok)),
  stages: Object.fromEntries(stages.map((s) => [s.name, { seconds: s.seconds, ok: s.ok }])),
  // Wall time: install runs beside golden → daemon → tests, so stage seconds overlap.
  total_seconds: Number(wall),
  golden: golden && {
    prompts: golden.prompts, plain_identical: golden.plainIdentical, tree_identical: golden.treeIdentical,
    emulated_plain_tok_s: Number(golden.plainTokS.toFixed(1)), emulated_tree_tok_s: Number(golden.treeTokS.toFixed(1)),
  },
  daemon: { row: readJson('daemon-row.json') },
  install: {
    checks: installChecks.length, failed: installChecks.filter((l) => l.startsWith('FAIL')),
    installed_daemon_row: readJson('installed-row.json'),
  },
  tests: { total: count('total'), pass: count('pass'), fail: count('fail'), skip: count('skip') },
  logs: work,
};

function said(name, good) {
  const st = result.stages[name];
  return st ? (st.ok ? good : 'FAILED') : 'not run';
}

console.log('\nstage      seconds  result');
for (const s of stages) console.log(`${s.name.padEnd(10)} ${String(s.seconds).padStart(7)}  ${s.ok ? 'ok' : 'FAILED'}`);
const g = result.golden;
console.log(
  `check:arm64: ${result.ok ? 'PASS' : 'FAIL'} in ${result.total_seconds} s; ` +
    (g ? `golden plain ${g.plain_identical}/${g.prompts}, tree ${g.tree_identical}/${g.prompts} identical to x86 ` +
      `(emulated: ${g.emulated_plain_tok_s} / ${g.emulated_tree_tok_s} tok/s plain / tree, qemu, not a board's speed); ` : 'golden: no result; ') +
    `daemon ${said('daemon', 'answered')}; install ${result.install.checks - result.install.failed.length}/${result.install.checks} checks, ` +
    `${said('install', 'installed daemon answered')}; ` +
    `tests ${result.tests.pass} passed, ${result.tests.fail} failed, ${result.tests.skip} skipped (${said('tests', 'ok')})`,
);
if (json === '1') console.log(JSON.stringify(result));
process.exitCode = result.ok ? 0 : 1;
