/* bitad fleet dashboard: plain JS, no framework. Live data from /api/events (Server-Sent Events),
 * history from /api/history, charts with uPlot (one series per board, synced cursors). */
'use strict';

const CHARTS = [
  { series: 'tokens_per_s', title: 'tokens/s (p50 per board)' },
  { series: 'ttft_ms_p95', title: 'TTFT p95 (ms)' },
  { series: 'cpu_pct', title: 'CPU load (%)' },
  { series: 'temp_c', title: 'temperature (°C)' },
];
const CHART_HEIGHT = 170;
const RANGES = { '15m': { span: 900, bucket: 5 }, '6h': { span: 21600, bucket: 120 }, '24h': { span: 86400, bucket: 480 } };
/** Card rows: label, key (data-f, read by the tests), text of a board view. */
const FIELDS = [
  ['model', 'model', (v) => v.model ?? '–'],
  ['version', 'version', (v) => v.version ?? '–'],
  ['tokens/s', 'tokens_per_s', (v) => fmt(v.tokens_per_s, 1)],
  ['TTFT p95', 'ttft_ms_p95', (v) => ms(v.ttft_ms_p95)],
  ['TPOT p95', 'tpot_ms_p95', (v) => ms(v.tpot_ms_p95)],
  ['accepted/step', 'mean_accepted_tokens', (v) => fmt(v.mean_accepted_tokens, 2)],
  ['tree', 'tree', (v) => (v.tree_rows === null ? '–' : `${v.tree_rows} rows · ${policy(v)}`)],
  ['queue', 'queue_depth', (v) => (v.queue_depth === null ? '–' : `${v.queue_depth}${v.busy ? ' · busy' : ''}`)],
  ['CPU / GPU', 'load', (v) => `${pct(v.cpu_pct)} / ${pct(v.gpu_pct)}`],
  ['temp', 'temp_c', (v) => (v.temp_c === null ? '–' : `${fmt(v.temp_c, 1)} °C`)],
  ['throttled', 'throttled', (v) => (v.throttled === null ? '–' : v.throttled ? 'YES' : 'no')],
  ['RSS', 'rss_mb', (v) => (v.rss_mb === null ? '–' : `${fmt(v.rss_mb, 0)} MB`)],
  ['requests', 'requests', (v) => (v.requests === null ? '–' : `${v.requests} (${v.errors ?? 0} err) / ${v.window_s ?? '?'} s`)],
];

const $ = (id) => document.getElementById(id);
const fmt = (x, d) => (x === null || x === undefined ? '–' : Number(x).toFixed(d));
const ms = (x) => (x === null || x === undefined ? '–' : `${fmt(x, x < 10 ? 2 : 1)} ms`);
const pct = (x) => (x === null || x === undefined ? '–' : `${fmt(x, 0)} %`);
const policy = (v) => (v.tree_active && v.tree_active !== v.tree_policy ? `${v.tree_policy} → ${v.tree_active}` : v.tree_policy ?? '–');
const color = (i) => `hsl(${(i * 137.508) % 360} 65% 42%)`;
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const state = {
  range: '15m',
  node: location.pathname.startsWith('/board/') ? decodeURIComponent(location.pathname.slice(7)) : null,
  views: new Map(),
  cards: new Map(),
  charts: [],
  chartNodes: [],
  longTasks: [],
  updates: 0,
  /** The board page's requests as the board reported them (telemetry), newest first. */
  boardRequests: [],
};
// Read by the tests and the benchmark (series per chart, cards, long tasks).
window.__dashboard = {
  state,
  charts: () => state.charts.map((c) => ({ series: c.series, boards: c.u.series.length - 1, points: c.data[0].length })),
};
if (typeof PerformanceObserver !== 'undefined' && PerformanceObserver.supportedEntryTypes?.includes('longtask')) {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) state.longTasks.push({ start: e.startTime, duration: e.duration });
  }).observe({ type: 'longtask', buffered: true });
}

// ---- cards ----------------------------------------------------------------------------------

function buildCard(node) {
  const card = el('article', 'card');
  card.dataset.node = node;
  const h = el('h2');
  const a = el('a', '', node);
  a.href = `/board/${encodeURIComponent(node)}`;
  h.append(a, el('span', 'badge', ''));
  const dl = el('dl');
  const cells = {};
  for (const [label, key] of FIELDS) {
    const dd = el('dd');
    dd.dataset.f = key;
    dl.append(el('dt', '', label), dd);
    cells[key] = dd;
  }
  const why = el('div', 'why');
  card.append(h, dl, why);
  return { card, badge: h.lastChild, cells, why, status: '' };
}

function renderCard(c, v) {
  if (c.status !== v.status) {
    c.card.className = `card ${v.status}`;
    c.badge.textContent = v.status;
    c.card.dataset.status = v.status;
    c.status = v.status;
  }
  for (const [, key, text] of FIELDS) {
    const t = text(v);
    if (c.cells[key].textContent !== t) c.cells[key].textContent = t;
  }
  c.cells.throttled.classList.toggle('hot', v.throttled === true);
  const why = v.status === 'online' ? v.tree_reason ?? '' : v.status_reason;
  if (c.why.textContent !== why) c.why.textContent = why;
}

function placeCards() {
  const host = state.node ? $('board-card') : $('cards');
  const nodes = [...state.cards.keys()].filter((n) => !state.node || n === state.node).sort();
  host.replaceChildren(...nodes.map((n) => state.cards.get(n).card));
}

function applyViews(views) {
  let added = false;
  for (const v of views) {
    state.views.set(v.node, v);
    let c = state.cards.get(v.node);
    if (!c) {
      state.cards.set(v.node, (c = buildCard(v.node)));
      added = true;
    }
    renderCard(c, v);
  }
  if (added) placeCards();
  return added;
}

function removeBoards(nodes) {
  for (const n of nodes) {
    state.views.delete(n);
    state.cards.get(n)?.card.remove();
    state.cards.delete(n);
  }
}

function renderTotals(t, connected) {
  const parts = [
    ['boards', t.boards],
    ['online', t.online],
    ['degraded', t.degraded],
    ['stale', t.stale],
    ['offline', t.offline],
    ['tokens/s', fmt(t.tokens_per_s, 1)],
    ['requests', `${t.requests} (${t.errors} err)`],
    ['queued', t.queue_depth],
  ];
  const box = $('totals');
  if (box.childElementCount !== parts.length) box.replaceChildren(...parts.map(([k]) => { const s = el('span', '', `${k} `); s.dataset.t = k; s.append(el('b')); return s; }));
  parts.forEach(([, val], i) => {
    const b = box.children[i].lastChild;
    if (b.textContent !== String(val)) b.textContent = String(val);
  });
  $('conn').textContent = connected === false ? 'broker disconnected' : 'live';
  $('conn').className = connected === false ? 'conn' : 'conn live';
}

// ---- charts ---------------------------------------------------------------------------------

function chartNodes() {
  return (state.node ? [state.node] : [...state.views.keys()]).sort();
}

async function loadCharts() {
  const nodes = chartNodes();
  state.chartNodes = nodes;
  const q = (s) => `/api/history?series=${s}&range=${state.range}${state.node ? `&node=${encodeURIComponent(state.node)}` : ''}`;
  const histories = await Promise.all(CHARTS.map((c) => fetch(q(c.series)).then((r) => r.json())));
  for (const c of state.charts) c.u.destroy();
  const host = $('charts');
  // All boxes first: each chart's width is its box's once the grid has laid them all out.
  const boxes = CHARTS.map((spec) => {
    const box = el('div', 'chart');
    box.dataset.series = spec.series;
    box.append(el('h3', '', spec.title));
    return box;
  });
  host.replaceChildren(...boxes);
  state.charts = CHARTS.map((spec, i) => makeChart(boxes[i], spec, histories[i], nodes));
}

/** The x range is always the whole chosen span ending now, so a young history does not zoom into seconds. */
function xRange() {
  const now = Date.now() / 1000;
  return [now - RANGES[state.range].span, now];
}

function makeChart(box, spec, h, nodes) {
  const index = new Map(h.nodes.map((n, i) => [n, i]));
  const data = [h.xs.slice(), ...nodes.map((n) => (index.has(n) ? h.ys[index.get(n)].slice() : h.xs.map(() => null)))];
  const opts = {
    width: Math.max(300, box.clientWidth - 16),
    height: CHART_HEIGHT,
    cursor: { sync: { key: 'bitad-fleet' }, points: { show: nodes.length <= 30 } },
    legend: { show: nodes.length <= 12, live: nodes.length <= 12 },
    scales: { x: { time: true, range: xRange } },
    axes: [{}, { size: 48 }],
    series: [{}, ...nodes.map((n, i) => ({ label: n, stroke: color(i), width: 1.25, spanGaps: false, points: { show: nodes.length <= 4, size: 4 } }))],
  };
  const u = new uPlot(opts, data, box);
  box.dataset.boards = String(nodes.length);
  return { series: spec.series, u, data, box, nodes, dirty: false };
}

/** Live points into the current bucket of every chart; redrawn one chart per task so no frame holds all four. */
function appendPoints(views) {
  const { span, bucket } = RANGES[state.range];
  const now = Date.now() / 1000;
  for (const c of state.charts) {
    const xs = c.data[0];
    for (const v of views) {
      const i = c.nodes.indexOf(v.node);
      if (i < 0 || v.last_seen === null || !v.reporting) continue;
      const x = Math.floor(v.last_seen / 1000 / bucket) * bucket;
      let k = xs.length - 1;
      if (k < 0 || x > xs[k]) {
        xs.push(x);
        for (let s = 1; s < c.data.length; s++) c.data[s].push(null);
        k = xs.length - 1;
      } else if (x < xs[k]) continue;
      const y = v[c.series];
      if (y !== null && y !== undefined) c.data[i + 1][k] = y;
      c.dirty = true;
    }
    while (xs.length && xs[0] < now - span) for (const a of c.data) a.shift();
  }
  redrawNext(0);
}

function redrawNext(i) {
  const c = state.charts[i];
  if (!c) return;
  if (c.dirty) {
    c.dirty = false;
    c.u.setData(c.data);
  }
  setTimeout(() => redrawNext(i + 1), 0);
}

let chartsReload = null;
function reloadChartsSoon() {
  clearTimeout(chartsReload);
  chartsReload = setTimeout(() => loadCharts().catch(console.error), 300);
}

// ---- live stream ----------------------------------------------------------------------------

function connect() {
  // A board page also gets that board's newly reported requests (event `requests`).
  const es = new EventSource(state.node ? `/api/events?node=${encodeURIComponent(state.node)}` : '/api/events');
  es.addEventListener('requests', (e) => {
    const r = JSON.parse(e.data);
    if (r.node !== state.node) return;
    state.boardRequests = [...r.requests.slice().reverse(), ...state.boardRequests].slice(0, MAX_REQUEST_ROWS);
    renderRequests();
  });
  es.addEventListener('snapshot', (e) => {
    const s = JSON.parse(e.data);
    removeBoards([...state.views.keys()].filter((n) => !s.boards.some((b) => b.node === n)));
    applyViews(s.boards);
    renderTotals(s.totals, s.broker_connected);
    if (state.node && !state.views.has(state.node)) $('board-card').textContent = `no board "${state.node}"`;
    reloadChartsSoon();
  });
  es.addEventListener('update', (e) => {
    const u = JSON.parse(e.data);
    state.updates++;
    removeBoards(u.removed);
    const added = applyViews(u.boards);
    renderTotals(u.totals, u.broker_connected);
    if (added || u.removed.length) reloadChartsSoon();
    else appendPoints(u.boards);
    if (state.node && u.boards.some((b) => b.node === state.node)) renderDetails();
  });
  es.onerror = () => {
    $('conn').textContent = 'reconnecting…';
    $('conn').className = 'conn';
  };
}

// ---- board page -----------------------------------------------------------------------------

/** A table row: kind 'th' for the header; 'l' left-aligns the second (text) column. */
function row(cells, kind) {
  const tr = el('tr');
  cells.forEach((c, i) => tr.append(el(kind === 'th' ? 'th' : 'td', kind === 'l' && i === 1 ? 'l' : '', String(c))));
  return tr;
}

async function loadBoard() {
  const r = await fetch(`/api/board/${encodeURIComponent(state.node)}`);
  if (!r.ok) return;
  const d = await r.json();
  $('prompt-max').max = d.max_tokens;
  state.detail = d;
  state.boardRequests = d.requests ?? [];
  renderRequests();
  $('windows').replaceChildren(
    row(['time', 'requests', 'errors', 'tok/s p50', 'TTFT p95', 'queue'], 'th'),
    ...d.windows.map((w) => row([time(w.ts), w.requests ?? '–', w.errors ?? '–', fmt(w.tokens_per_s, 1), ms(w.ttft_ms_p95), w.queue_depth ?? '–'])),
  );
  renderDetails();
}

const MAX_REQUEST_ROWS = 50;
const time = (ts) => new Date(ts).toLocaleTimeString();

/**
 * One table: the prompts sent from this page (with their text) and the requests the board reported
 * in its telemetry (any client; no text, the daemon never publishes it). A prompt of ours shows
 * once: the board's row with the same total_ms and output tokens (both to the µs, from the same
 * measurement) is that prompt. Sorted by time: the dashboard's clock for prompts, the board's for
 * its rows.
 */
function renderRequests() {
  const d = state.detail;
  if (!d) return;
  const ours = new Set(d.prompts.filter((p) => p.stats).map((p) => `${p.stats.total_ms}|${p.stats.output_tokens}`));
  const prompts = d.prompts.map((p) => ({
    ts: p.ts,
    cells: [time(p.ts), p.prompt.slice(0, 40), p.outcome ?? 'running', p.stats?.output_tokens ?? '–', ms(p.stats?.ttft_ms), fmt(p.stats?.tokens_per_s, 1), ms(p.stats?.total_ms), 'this page'],
  }));
  const board = state.boardRequests
    .filter((r) => !ours.has(`${r.total_ms}|${r.output_tokens}`))
    .map((r) => ({
      ts: r.ts,
      cells: [time(r.ts), `${r.kind ?? '?'} · ${r.transport ?? '?'}`, r.outcome === 'error' ? `error ${r.error_code ?? ''}` : r.outcome ?? '–', r.output_tokens ?? '–', ms(r.ttft_ms), fmt(r.tokens_per_s, 1), ms(r.total_ms), 'board'],
    }));
  const rows = [...prompts, ...board].sort((a, b) => b.ts - a.ts).slice(0, MAX_REQUEST_ROWS);
  $('prompts').replaceChildren(row(['time', 'request', 'outcome', 'tokens', 'TTFT', 'tok/s', 'total', 'from'], 'th'), ...rows.map((r) => row(r.cells, 'l')));
}

function renderDetails() {
  const d = state.detail;
  if (!d) return;
  const info = d.info ?? {};
  const comps = Object.entries(d.telemetry?.components ?? {}).map(([k, c]) => `${k}: ${c.status}${c.reason ? ` (${c.reason})` : ''}`);
  const lines = [
    `model      ${info.model ? `${info.model.name} (context ${info.model.context_length}, vocab ${info.model.vocab_size}, bita ${info.model.bita})` : '–'}`,
    `limits     ${info.limits ? `max_tokens ${info.limits.max_tokens}, queue ${info.limits.queue_capacity}, payload ${info.limits.max_payload_bytes} B` : '–'}`,
    `transports ${info.transports ? `mqtt ${info.transports.mqtt ?? 'off'}, socket ${info.transports.socket ?? 'off'}` : '–'}`,
    `parts      ${comps.join(' · ') || '–'}`,
    `tree       ${d.telemetry?.tree ? `${d.telemetry.tree.rows} rows (${d.telemetry.tree.min_rows}–${d.telemetry.tree.max_rows}), ${d.telemetry.tree.changes} changes: ${d.telemetry.tree.reason}` : '–'}`,
  ];
  const pre = el('pre', '', lines.join('\n'));
  $('details').replaceChildren(pre);
}

function sendPrompt(ev) {
  ev.preventDefault();
  const out = $('prompt-out');
  const prompt = $('prompt-text').value;
  out.textContent = prompt;
  out.dataset.state = 'sending';
  $('prompt-stats').textContent = '';
  $('prompt-send').disabled = true;
  fetch(`/api/board/${encodeURIComponent(state.node)}/generate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt, max_tokens: Number($('prompt-max').value) }),
  })
    .then((r) => r.json().then((b) => ({ ok: r.ok, b })))
    .then(({ ok, b }) => {
      if (!ok) throw new Error(b.message);
      streamAnswer(b.events, out);
    })
    .catch((e) => {
      $('prompt-stats').textContent = `error: ${e.message}`;
      out.dataset.state = 'error';
      $('prompt-send').disabled = false;
    });
}

function streamAnswer(url, out) {
  const es = new EventSource(url);
  out.dataset.state = 'streaming';
  out.dataset.chunks = '0';
  es.addEventListener('chunk', (e) => {
    out.append(document.createTextNode(JSON.parse(e.data).text));
    out.dataset.chunks = String(Number(out.dataset.chunks) + 1);
  });
  es.addEventListener('final', (e) => {
    es.close();
    const f = JSON.parse(e.data);
    const s = f.data?.stats;
    out.dataset.state = f.status;
    $('prompt-stats').textContent =
      f.status === 'ok'
        ? `${s.output_tokens} tokens · TTFT ${ms(s.ttft_ms)} · ${fmt(s.tokens_per_s, 1)} tok/s · ${fmt(s.mean_accepted_tokens, 2)} accepted/step · finish ${f.data.finish_reason}`
        : `error ${f.error.code}: ${f.error.message}`;
    $('prompt-send').disabled = false;
    loadBoard().catch(console.error);
  });
  es.onerror = () => es.close();
}

// ---- start ----------------------------------------------------------------------------------

function start() {
  for (const b of document.querySelectorAll('.ranges button')) {
    b.addEventListener('click', () => {
      state.range = b.dataset.range;
      for (const o of document.querySelectorAll('.ranges button')) o.classList.toggle('on', o === b);
      loadCharts().catch(console.error);
    });
  }
  if (state.node) {
    document.title = `${state.node} · bitad`;
    $('crumb').textContent = ` / ${state.node}`;
    $('board').hidden = false;
    $('cards').hidden = true;
    $('prompt-form').addEventListener('submit', sendPrompt);
    loadBoard().catch(console.error);
    setInterval(() => loadBoard().catch(console.error), 10_000);
  }
  let resize = null;
  window.addEventListener('resize', () => {
    clearTimeout(resize);
    resize = setTimeout(() => state.charts.forEach((c) => c.u.setSize({ width: Math.max(300, c.box.clientWidth - 16), height: CHART_HEIGHT })), 200);
  });
  connect();
}

start();
