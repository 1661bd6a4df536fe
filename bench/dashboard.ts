/**
 * `npm run bench:dashboard -- [--boards 200] [--seconds 120] [--interval-ms 1000] [--json]`:
 * simulated boards (one MQTT connection each, telemetry every interval) through a real mosquitto
 * into a `bitad dashboard` process, with the fleet page open in headless Chromium. Reports the
 * dashboard process's CPU share (utime + stime over wall time, from /proc, after a warm-up) and
 * RSS, the history it wrote, and the page's main-thread long tasks (PerformanceObserver
 * 'longtask', > 50 ms) while live. `--json` prints a JSON object as the last line.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { startMosquitto } from '../test/daemon/helpers/mosquitto.js';
import { CHROMIUM, startDashboardProcess, startSimBoards, until } from '../test/dashboard/helpers.js';

const { values } = parseArgs({
  options: {
    boards: { type: 'string', default: '200' },
    seconds: { type: 'string', default: '120' },
    'interval-ms': { type: 'string', default: '1000' },
    'warmup-s': { type: 'string', default: '15' },
    json: { type: 'boolean', default: false },
  },
});
const BOARDS = Number(values.boards);
const SECONDS = Number(values.seconds);
const WARMUP_S = Number(values['warmup-s']);
const TICKS_PER_S = 100; // USER_HZ on Linux

/** utime + stime of a process (all its threads), in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_S;
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round((Number(m[1]) / 1024) * 10) / 10 : NaN;
}

const pctl = (xs: number[], p: number) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))] : 0);

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-bench-dash-'));
  const mosq = await startMosquitto();
  const sims = await startSimBoards(mosq.port, BOARDS, { intervalMs: Number(values['interval-ms']) });
  const dash = await startDashboardProcess({ port: mosq.port, db: join(dir, 'dashboard.db'), args: ['--stale-s', '10'] });
  const pid = dash.child.pid!;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1500, height: 1000 } });
    const t0 = Date.now();
    await page.goto(dash.url);
    await until('every card', async () => (await page.locator('.card').count()) === BOARDS || null, 60_000);
    const loadMs = Date.now() - t0;
    await sleep(WARMUP_S * 1000);
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const loadTasks = (await page.evaluate(() => (window as any).__dashboard.state.longTasks.splice(0))) as Array<{ duration: number }>;
    const updates0 = (await page.evaluate(() => (window as any).__dashboard.state.updates)) as number; // eslint-disable-line @typescript-eslint/no-explicit-any
    const cpu0 = cpuSeconds(pid);
    const w0 = performance.now();
    const published0 = sims.published();
    const rss: number[] = [];
    for (let s = 0; s < SECONDS; s += 5) {
      await sleep(5000);
      rss.push(rssMb(pid));
    }
    const wallS = (performance.now() - w0) / 1000;
    const cpuPct = ((cpuSeconds(pid) - cpu0) / wallS) * 100;
    const tasks = (await page.evaluate(() => (window as any).__dashboard.state.longTasks)) as Array<{ duration: number }>; // eslint-disable-line @typescript-eslint/no-explicit-any
    const updates = ((await page.evaluate(() => (window as any).__dashboard.state.updates)) as number) - updates0; // eslint-disable-line @typescript-eslint/no-explicit-any
    const charts = (await page.evaluate(() => (window as any).__dashboard.charts())) as Array<{ boards: number; points: number }>; // eslint-disable-line @typescript-eslint/no-explicit-any
    const fleet = (await (await fetch(`${dash.url}api/fleet`)).json()) as { totals: Record<string, number> };
    const durations = tasks.map((t) => t.duration);
    const result = {
      boards: BOARDS,
      interval_ms: Number(values['interval-ms']),
      seconds: Math.round(wallS),
      messages: sims.published() - published0,
      dashboard_cpu_pct_of_one_core: Math.round(cpuPct * 10) / 10,
      dashboard_rss_mb_max: Math.max(...rss),
      dashboard_rss_mb_first: rss[0],
      dashboard_rss_mb_last: rss[rss.length - 1],
      page_load_ms: loadMs,
      page_load_long_tasks: loadTasks.length,
      page_load_long_task_max_ms: Math.round(Math.max(0, ...loadTasks.map((t) => t.duration))),
      live_updates: updates,
      live_long_tasks: tasks.length,
      live_long_tasks_per_min: Math.round((tasks.length / wallS) * 60 * 10) / 10,
      live_long_task_p50_ms: Math.round(pctl(durations, 0.5)),
      live_long_task_max_ms: Math.round(Math.max(0, ...durations)),
      live_long_task_total_ms: Math.round(durations.reduce((a, b) => a + b, 0)),
      live_blocked_pct: Math.round((durations.reduce((a, b) => a + b, 0) / (wallS * 1000)) * 1000) / 10,
      chart_series: charts.map((c) => c.boards),
      online: fleet.totals.online,
    };
    print(result);
  } finally {
    await browser.close();
    await sims.stop();
    await dash.stop();
    await mosq.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function print(r: Record<string, unknown>): void {
  const lines = [
    `boards ${r.boards}, telemetry every ${r.interval_ms} ms, ${r.seconds} s measured, ${r.messages} messages`,
    `dashboard process: CPU ${r.dashboard_cpu_pct_of_one_core} % of one core, RSS ${r.dashboard_rss_mb_first} → ${r.dashboard_rss_mb_last} MB (max ${r.dashboard_rss_mb_max})`,
    `page: loaded in ${r.page_load_ms} ms (${r.page_load_long_tasks} long tasks, max ${r.page_load_long_task_max_ms} ms)`,
    `page live: ${r.live_updates} updates, ${r.live_long_tasks} long tasks (${r.live_long_tasks_per_min}/min, p50 ${r.live_long_task_p50_ms} ms, max ${r.live_long_task_max_ms} ms), main thread blocked ${r.live_blocked_pct} % by them`,
    `charts: ${JSON.stringify(r.chart_series)} series; online ${r.online}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  if (values.json) process.stdout.write(JSON.stringify(r) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:dashboard: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
