/**
 * `bitad dashboard` end to end in headless Chromium (Debian's chromium, driven by playwright-core):
 * a real mosquitto, three FakeEngine daemons and one `bitad start` on the bundled model (all real
 * processes), and 50 simulated boards. Checks the cards show the published values, SIGTERM and
 * SIGKILL (Last Will) turn boards offline, a silenced board turns stale, every chart has one series
 * per board, a bad token is refused, and the prompt box streams a real answer from the bundled
 * model. Takes the README's screenshots (docs/img/ with BITAD_SCREENSHOTS=1).
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { chromium, type Browser, type Page } from 'playwright-core';
import { PACKAGE_ROOT } from '../../src/daemon/package-root.js';
import { startMosquitto, type Mosquitto } from '../daemon/helpers/mosquitto.js';
import { CHROMIUM, chromiumPresent, simTelemetry, startDaemonProcess, startDashboardProcess, startSimBoards, until, type Child, type DashboardChild, type SimBoards } from './helpers.js';

if (!chromiumPresent()) {
  const msg = `!!! ${CHROMIUM} NOT FOUND: the dashboard browser test cannot run. Install it: apt-get install -y chromium (scripts/setup.sh does) !!!`;
  if (process.env.CI) {
    t.fail(msg);
  } else {
    process.stderr.write(`\n${'!'.repeat(100)}\n${msg}\n${'!'.repeat(100)}\n\n`);
    t.test(msg, { skip: msg }, () => undefined);
  }
} else {
  t.test('dashboard in headless Chromium: fleet of 3 fake + 1 real daemon + 50 simulated boards', { timeout: 90_000 }, run);
}

const TOKEN = 'test-token-7f3a';
const SIMS = 50;

async function run(t: Test): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-dash-'));
  const cleanup: Array<() => Promise<unknown>> = [];
  t.teardown(async () => {
    for (const f of cleanup.reverse()) await f().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });
  const mosq: Mosquitto = await startMosquitto();
  cleanup.push(() => mosq.stop());
  const [fakeA, fakeB, fakeC, tiny] = await Promise.all([
    startDaemonProcess({ node: 'fake-a', port: mosq.port, dir, fake: true }),
    startDaemonProcess({ node: 'fake-b', port: mosq.port, dir, fake: true }),
    startDaemonProcess({ node: 'fake-c', port: mosq.port, dir, fake: true }),
    startDaemonProcess({ node: 'tiny', port: mosq.port, dir, fake: false }),
  ]);
  for (const d of [fakeA, fakeB, fakeC, tiny]) cleanup.push(() => d.stop('SIGKILL'));
  const sims = await startSimBoards(mosq.port, SIMS);
  cleanup.push(() => sims.stop());
  const dash = await startDashboardProcess({ port: mosq.port, db: join(dir, 'dashboard.db'), token: TOKEN });
  cleanup.push(() => dash.stop());
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  cleanup.push(() => browser.close());

  await t.test('a bad token is refused', (t) => badToken(t, dash, browser));
  const page = await browser.newPage({ viewport: { width: 1500, height: 1000 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${dash.url}?token=${TOKEN}`);
  t.equal(new URL(page.url()).search, '', 'the good token is swapped for a cookie and leaves the address bar');

  await t.test('cards appear with the published values', (t) => cards(t, page, sims));
  await t.test('charts have one series per board', (t) => charts(t, page, 4 + SIMS));
  await page.screenshot({ path: screenshot('dashboard-fleet.png') });
  await t.test('SIGTERM, SIGKILL (Last Will) and silence: offline, offline, stale', (t) => offline(t, page, fakeA, fakeB, sims));
  await t.test('the prompt box streams a real answer from the bundled model', (t) => prompt(t, browser, dash));
  t.same(errors, [], 'no page errors');
  void fakeC;
}

/**
 * The README's screenshots: written to docs/img/ when BITAD_SCREENSHOTS=1 (`BITAD_SCREENSHOTS=1 npx
 * tap test/dashboard/browser.test.ts`), else to a temporary folder, so `npm test` leaves the
 * checkout as it found it.
 */
function screenshot(name: string): string {
  const d = process.env.BITAD_SCREENSHOTS === '1' ? join(PACKAGE_ROOT, 'docs/img') : join(tmpdir(), 'bitad-dashboard-screens');
  mkdirSync(d, { recursive: true });
  return join(d, name);
}

async function badToken(t: Test, dash: DashboardChild, browser: Browser): Promise<void> {
  t.equal((await fetch(`${dash.url}api/fleet`)).status, 401, 'no token: 401');
  t.equal((await fetch(`${dash.url}api/fleet`, { headers: { authorization: 'Bearer wrong' } })).status, 401, 'wrong bearer token: 401');
  t.equal((await fetch(`${dash.url}api/fleet`, { headers: { cookie: 'bitad_dashboard=wrong' } })).status, 401, 'wrong cookie: 401');
  const ok = await fetch(`${dash.url}api/fleet`, { headers: { authorization: `Bearer ${TOKEN}` } });
  t.equal(ok.status, 200, 'right bearer token: 200');
  const page = await browser.newPage();
  const r = await page.goto(`${dash.url}?token=wrong`);
  t.equal(r?.status(), 401, 'the page with a wrong ?token= is refused');
  t.match(await page.textContent('h1'), /401/);
  t.equal((await page.context().cookies()).length, 0, 'no cookie set');
  await page.close();
}

type CardText = Record<string, string>;
const cardText = (page: Page, node: string): Promise<CardText | null> =>
  page.evaluate((n) => {
    const c = document.querySelector(`.card[data-node="${n}"]`);
    if (!c) return null;
    const out: Record<string, string> = { status: (c as HTMLElement).dataset.status ?? '' };
    for (const dd of c.querySelectorAll('dd')) out[(dd as HTMLElement).dataset.f!] = dd.textContent ?? '';
    return out;
  }, node);

async function cards(t: Test, page: Page, sims: SimBoards): Promise<void> {
  const n = await until('54 cards', async () => ((await page.locator('.card').count()) === 4 + SIMS ? true : null), 20_000);
  t.ok(n, `${4 + SIMS} cards`);
  for (const i of [0, 7, 13, 49]) {
    const node = sims.nodes[i];
    const expected = simTelemetry(i, 0, 1) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    const c = await until(`${node} telemetry on its card`, async () => {
      const c = await cardText(page, node);
      return c && c.tokens_per_s !== '–' ? c : null;
    });
    t.equal(c.status, 'online', `${node} online`);
    t.match(c.tokens_per_s, new RegExp(`^${100 + i}\\.[0-4]$`), `${node} tokens/s`);
    t.equal(c.ttft_ms_p95, `${expected.ttft_ms_p95.toFixed(expected.ttft_ms_p95 < 10 ? 2 : 1)} ms`, `${node} TTFT p95`);
    t.equal(c.tpot_ms_p95, `${expected.tpot_ms_p95.toFixed(2)} ms`, `${node} TPOT p95`);
    t.equal(c.mean_accepted_tokens, expected.mean_accepted_tokens.toFixed(2), `${node} mean accepted tokens`);
    t.equal(c.tree, `${expected.tree.rows} rows · auto → ${expected.tree.active}`, `${node} tree budget and policy`);
    t.equal(c.queue_depth, `${expected.queue_depth}${expected.busy ? ' · busy' : ''}`, `${node} queue depth`);
    t.equal(c.temp_c, `${expected.load.cpu_temp_c.toFixed(1)} °C`, `${node} temperature`);
    t.equal(c.throttled, i % 13 === 0 ? 'YES' : 'no', `${node} throttling`);
    t.equal(c.rss_mb, `${expected.load.rss_mb} MB`, `${node} RSS`);
    t.equal(c.model, `sim-model-${i % 3}`, `${node} model from info`);
    t.equal(c.version, '0.1.0-sim', `${node} version from info`);
  }
  const tiny = await until('tiny card with its telemetry', async () => {
    const c = await cardText(page, 'tiny');
    return c && c.tree !== '–' ? c : null;
  });
  t.equal(tiny.model, 'tinystories-bita', 'the real daemon reports the bundled model');
  t.match(tiny.tree, /^\d+ rows · auto/, 'its tree budget and policy');
  t.match(tiny.rss_mb, /^\d+ MB$/, 'its RSS');
  const totals = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll('#totals span')].map((s) => [(s as HTMLElement).dataset.t, s.querySelector('b')!.textContent])));
  t.equal(totals.boards, String(4 + SIMS), 'fleet totals: boards');
}

async function charts(t: Test, page: Page, boards: number): Promise<void> {
  const cs = await until('charts with every board', async () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const cs = (await page.evaluate(() => (window as any).__dashboard.charts())) as Array<{ series: string; boards: number; points: number }>;
    return cs.length === 4 && cs.every((c) => c.boards === boards && c.points > 0) ? cs : null;
  });
  for (const c of cs) t.equal(c.boards, boards, `${c.series}: one series per board`);
  t.equal(await page.locator('.chart canvas').count(), 4, 'four uPlot canvases');
}

async function offline(t: Test, page: Page, fakeA: Child, fakeB: Child, sims: SimBoards): Promise<void> {
  t.equal(await fakeA.stop('SIGTERM'), 0, 'fake-a drained and exited 0');
  await until('fake-a offline', async () => (await cardText(page, 'fake-a'))?.status === 'offline');
  t.pass('fake-a offline after SIGTERM (its clean stop)');
  await fakeB.stop('SIGKILL');
  await until('fake-b offline', async () => (await cardText(page, 'fake-b'))?.status === 'offline');
  t.pass('fake-b offline after SIGKILL (the Last Will the broker published)');
  const silent = sims.nodes[3];
  sims.silence(silent);
  await until(`${silent} stale`, async () => (await cardText(page, silent))?.status === 'stale', 10_000);
  t.pass(`${silent} stale once its telemetry stopped (3 intervals)`);
  t.equal((await cardText(page, 'fake-c'))?.status, 'online', 'fake-c still online');
}

async function prompt(t: Test, browser: Browser, dash: DashboardChild): Promise<void> {
  const context = await browser.newContext({ viewport: { width: 1300, height: 1000 } });
  await context.addCookies([{ name: 'bitad_dashboard', value: TOKEN, url: dash.url }]);
  const page = await context.newPage();
  await page.goto(`${dash.url}board/tiny`);
  await page.fill('#prompt-text', 'Once upon a time');
  await page.fill('#prompt-max', '48');
  await page.click('#prompt-send');
  await until('the answer', async () => ['ok', 'error'].includes((await page.getAttribute('#prompt-out', 'data-state')) ?? '') || null, 30_000);
  t.equal(await page.getAttribute('#prompt-out', 'data-state'), 'ok', await page.textContent('#prompt-stats') ?? '');
  const text = (await page.textContent('#prompt-out')) ?? '';
  t.match(text, /^Once upon a time, there was a little/, 'the bundled model\'s greedy continuation');
  t.ok(Number(await page.getAttribute('#prompt-out', 'data-chunks')) > 1, 'streamed in several chunks');
  t.match((await page.textContent('#prompt-stats')) ?? '', /48 tokens · TTFT/, 'the final reply\'s stats');
  await until('the request in the recent table', async () => /Once upon a time\s*ok\s*48/.test((await page.textContent('#prompts')) ?? ''));
  t.pass('the request appears in the board\'s recent requests');
  await page.screenshot({ path: screenshot('dashboard-board.png'), fullPage: true });
  await context.close();
}
