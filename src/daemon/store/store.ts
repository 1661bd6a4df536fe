/**
 * The latency log: one SQLite file in WAL mode. Rows are buffered and written in one transaction
 * per flush (at most `flushMs` later), so a request never waits on disk.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { MIGRATIONS } from './migrations.js';
import type { ComponentHealth } from '../health.js';

export interface RequestRow {
  ts: number;
  transport: 'mqtt' | 'socket';
  kind: string | null;
  txn: string | null;
  model: string;
  prompt_tokens: number | null;
  output_tokens: number | null;
  queue_ms: number | null;
  ttft_ms: number | null;
  tpot_ms: number | null;
  engine_ms: number | null;
  total_ms: number | null;
  tokens_per_s: number | null;
  mean_accepted_tokens: number | null;
  tree_budget: number | null;
  rows_per_step: number | null;
  finish_reason: string | null;
  outcome: 'ok' | 'error';
  error_code: string | null;
}

export interface LoadSampleRow {
  ts: number;
  cpu_load_pct: number | null;
  cpu_temp_c: number | null;
  gpu_load_pct: number | null;
  mem_used_mb: number | null;
  rss_mb: number | null;
  queue_depth: number | null;
  tree_budget: number | null;
  throttled: number | null;
}

export interface StoreOptions {
  flushMs?: number;
  retentionDays?: number;
  maxRows?: number;
  readonly?: boolean;
}

const REQUEST_COLUMNS = [
  'ts', 'transport', 'kind', 'txn', 'model', 'prompt_tokens', 'output_tokens', 'queue_ms', 'ttft_ms', 'tpot_ms',
  'engine_ms', 'total_ms', 'tokens_per_s', 'mean_accepted_tokens', 'tree_budget', 'rows_per_step', 'finish_reason',
  'outcome', 'error_code',
] as const;
const LOAD_COLUMNS = ['ts', 'cpu_load_pct', 'cpu_temp_c', 'gpu_load_pct', 'mem_used_mb', 'rss_mb', 'queue_depth', 'tree_budget', 'throttled'] as const;

/** Applies pending migrations; returns the resulting schema version. */
export function migrate(db: Database.Database): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new Error(`database schema version ${current} is newer than this bitad (${MIGRATIONS.length})`);
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return MIGRATIONS.length;
}

export class Store {
  readonly db: Database.Database;
  private pendingRequests: RequestRow[] = [];
  private pendingLoad: LoadSampleRow[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  private pruneTimer: NodeJS.Timeout | null = null;
  private readonly insertRequest: Database.Statement;
  private readonly insertLoad: Database.Statement;
  private readonly flushMs: number;

  constructor(readonly path: string, private readonly opts: StoreOptions = {}) {
    if (!opts.readonly) mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false });
    if (!opts.readonly) {
      this.db.pragma('journal_mode = WAL');
      // WAL + NORMAL: a power cut may lose the last flushes, never corrupt the file.
      this.db.pragma('synchronous = NORMAL');
      migrate(this.db);
    }
    this.flushMs = opts.flushMs ?? 500;
    this.insertRequest = this.db.prepare(
      `INSERT INTO requests (${REQUEST_COLUMNS.join(',')}) VALUES (${REQUEST_COLUMNS.map((c) => '@' + c).join(',')})`,
    );
    this.insertLoad = this.db.prepare(
      `INSERT OR REPLACE INTO load_samples (${LOAD_COLUMNS.join(',')}) VALUES (${LOAD_COLUMNS.map((c) => '@' + c).join(',')})`,
    );
    if (!opts.readonly) {
      this.prune();
      this.pruneTimer = setInterval(() => this.prune(), 3_600_000).unref();
    }
  }

  health(): ComponentHealth {
    return { status: 'ok', path: this.path };
  }

  recordRequest(row: RequestRow): void {
    this.pendingRequests.push(row);
    this.scheduleFlush();
  }

  recordLoad(row: LoadSampleRow): void {
    this.pendingLoad.push(row);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.pendingRequests.length >= 512) {
      this.flush();
      return;
    }
    if (!this.flushTimer) this.flushTimer = setTimeout(() => this.flush(), this.flushMs);
  }

  /** Writes everything buffered in one transaction. */
  flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    if (this.pendingRequests.length === 0 && this.pendingLoad.length === 0) return;
    const reqs = this.pendingRequests;
    const loads = this.pendingLoad;
    this.pendingRequests = [];
    this.pendingLoad = [];
    this.db.transaction(() => {
      for (const r of reqs) this.insertRequest.run(r);
      for (const l of loads) this.insertLoad.run(l);
    })();
  }

  /** Retention: drop rows older than retentionDays, then the oldest beyond maxRows. */
  prune(now = Date.now()): { requests: number; load: number } {
    const cutoff = now - (this.opts.retentionDays ?? 30) * 86_400_000;
    const maxRows = this.opts.maxRows ?? 1_000_000;
    let requests = this.db.prepare('DELETE FROM requests WHERE ts < ?').run(cutoff).changes;
    requests += this.db
      .prepare('DELETE FROM requests WHERE id <= (SELECT id FROM requests ORDER BY id DESC LIMIT 1 OFFSET ?)')
      .run(maxRows).changes;
    let load = this.db.prepare('DELETE FROM load_samples WHERE ts < ?').run(cutoff).changes;
    load += this.db
      .prepare('DELETE FROM load_samples WHERE ts <= (SELECT ts FROM load_samples ORDER BY ts DESC LIMIT 1 OFFSET ?)')
      .run(maxRows).changes;
    return { requests, load };
  }

  requestsSince(sinceMs: number): RequestRow[] {
    return this.db.prepare('SELECT * FROM requests WHERE ts >= ? ORDER BY id').all(sinceMs) as RequestRow[];
  }

  loadSince(sinceMs: number): LoadSampleRow[] {
    return this.db.prepare('SELECT * FROM load_samples WHERE ts >= ? ORDER BY ts').all(sinceMs) as LoadSampleRow[];
  }

  close(): void {
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    if (!this.opts.readonly) this.flush();
    this.db.close();
  }
}
