/**
 * The latency log: one SQLite file in WAL mode.
 *
 * Request rows are committed in one transaction per event-loop turn (group commit), and only then
 * are their callbacks run, so the caller can send a request's final reply after its row is durable
 * against a crash of the process. Load samples wait up to `flushMs`.
 *
 * The store degrades, it never takes the daemon down: when the file cannot be written (disk full,
 * read-only, locked, I/O error) or cannot even be opened, rows stay in a bounded in-memory buffer
 * (the oldest are dropped beyond `maxBufferedRows`, and counted), callbacks still run, the write is
 * retried with backoff, and `health()` says `degraded` with the reason until a write succeeds.
 * Nothing is thrown from a timer or from record*().
 */
import { chmodSync, closeSync, fchmodSync, openSync, statSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { MIGRATIONS } from './migrations.js';
import { describeFault, isRowFault } from './fault.js';
import type { ComponentHealth } from '../health.js';
import { createPrivateDirs } from '../private-dirs.js';

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
  tree_policy: string | null;
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

export interface StoreLog {
  error(o: object, msg: string): void;
  warn(o: object, msg: string): void;
  info(o: object, msg: string): void;
}

export interface StoreOptions {
  /** Load samples are written at most this long after they are recorded (request rows at once). */
  flushMs?: number;
  retentionDays?: number;
  maxRows?: number;
  /** Rows held in memory while the file cannot be written; beyond it the oldest are dropped. */
  maxBufferedRows?: number;
  /**
   * WAL `synchronous`: 'normal' (default: commits survive a crash of the process; bench/store.ts
   * ≈0.05 ms per commit) or 'full' (also a power cut: one fsync per commit, ≈0.5–1 ms p50 and up
   * to 14 ms p99 on the dev VM). docs/daemon.md "Store" has the numbers.
   */
  synchronous?: 'normal' | 'full';
  readonly?: boolean;
  log?: StoreLog;
}

/** The file holds a schema this bitad does not know: a start failure, never a degraded store. */
export class StoreSchemaError extends Error {}

const REQUEST_COLUMNS = [
  'ts', 'transport', 'kind', 'txn', 'model', 'prompt_tokens', 'output_tokens', 'queue_ms', 'ttft_ms', 'tpot_ms',
  'engine_ms', 'total_ms', 'tokens_per_s', 'mean_accepted_tokens', 'tree_budget', 'rows_per_step', 'tree_policy', 'finish_reason',
  'outcome', 'error_code',
] as const;
const LOAD_COLUMNS = ['ts', 'cpu_load_pct', 'cpu_temp_c', 'gpu_load_pct', 'mem_used_mb', 'rss_mb', 'queue_depth', 'tree_budget', 'throttled'] as const;


/**
 * Default buffer bound. A buffered request row costs ≈0.6 KB of heap (measured with a 34-char
 * transaction: 10 000 rows = 5.9 MB), so a full disk grows the daemon by at most ≈6 MB.
 */
export const DEFAULT_MAX_BUFFERED_ROWS = 10_000;
/**
 * Retry backoff while degraded: first retry soon (a lock is usually brief), then doubling up to
 * 30 s, so a full disk costs one failed transaction (≈0.1 ms) per 30 s and recovery is seen
 * within 30 s of space returning.
 */
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 30_000;
/**
 * How long a write waits for another process's write lock. better-sqlite3's default (5 s) would
 * block the event loop, and with it every stream, for 5 s per attempt; a lock held longer than
 * this degrades the store instead.
 */
const BUSY_TIMEOUT_MS = 100;
/** Age retention runs this often (the row bound is also kept between runs: see TRIM_EVERY_MAX). */
const PRUNE_EVERY_MS = 3_600_000;
/**
 * max_rows holds whatever writes the rows, not only at the hourly prune: a local client sending
 * `x\n` in a loop had 22 000 bad_json rows/s written (≈10 GB an hour). So a table is trimmed back
 * to maxRows once 1 % of maxRows, at most this many, rows have been written to it since its last
 * trim: after any commit it holds at most maxRows + 1 %, and each trim stays short. Measured on the dev VM
 * (one-off script, a 1 000 000-row requests table): trimming 1 000 rows takes 1.1 ms, 10 000 rows
 * 6–18 ms; the OFFSET query used before for requests took 47–69 ms per run whatever it deleted.
 */
const TRIM_EVERY_MAX = 1_000;
/**
 * Deletes all but the newest `?` rows of a table. Request ids are handed out as max(id) + 1 and
 * rows go oldest first, so the newest maxRows rows are those above max(id) - maxRows: found in
 * O(log n) instead of walking maxRows rows (a gap left by age pruning only means keeping fewer).
 * Load samples are keyed by their ts, so their trim still walks maxRows rows (≈50 ms at 1 000 000),
 * but they come from a timer (≤ 1/s) and it runs once per trimEvery samples: ≈50 µs a sample.
 */
const TRIM_SQL = {
  requests: 'DELETE FROM requests WHERE id <= (SELECT max(id) FROM requests) - ?',
  load: 'DELETE FROM load_samples WHERE ts <= (SELECT ts FROM load_samples ORDER BY ts DESC LIMIT 1 OFFSET ?)',
} as const;
/** The database files (and their -wal/-shm) are private to the service group (the data dir: private-dirs.ts). */
const FILE_MODE = 0o640;
const FILE_SUFFIXES = ['', '-wal', '-shm'] as const;
type FileSuffix = (typeof FILE_SUFFIXES)[number];

type Pending = { table: 'requests'; row: RequestRow } | { table: 'load'; row: LoadSampleRow };
type Table = Pending['table'];

/** Applies pending migrations; returns the resulting schema version. */
export function migrate(db: Database.Database): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new StoreSchemaError(`database schema version ${current} is newer than this bitad (${MIGRATIONS.length})`);
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
  private conn: Database.Database | null = null;
  /**
   * Device and inode of the files `conn` has open (the database and its -wal, -shm): a different
   * database file (or none) at the path means it was deleted or replaced.
   */
  private opened: Record<FileSuffix, FileId | null> = { '': null, '-wal': null, '-shm': null };
  private insertRequest: Database.Statement | null = null;
  private insertLoad: Database.Statement | null = null;
  /** Rows not yet in the file, oldest first. */
  private pending: Pending[] = [];
  /** Callbacks of rows recorded this turn: run after the turn's commit (or failed attempt). */
  private waiters: (() => void)[] = [];
  /** Why the last write or open failed; null while the file is being written fine. */
  private fault: string | null = null;
  private dropped = 0;
  private commitScheduled: NodeJS.Immediate | null = null;
  private loadTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs = RETRY_MIN_MS;
  private pruneTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly maxBuffered: number;
  private readonly maxRows: number;
  /** Rows written to a table since it was last trimmed to maxRows; it is trimmed again at trimEvery. */
  private sinceTrim: Record<Table, number> = { requests: 0, load: 0 };
  private readonly trimEvery: number;

  constructor(readonly path: string, private readonly opts: StoreOptions = {}) {
    this.maxBuffered = opts.maxBufferedRows ?? DEFAULT_MAX_BUFFERED_ROWS;
    this.maxRows = opts.maxRows ?? 1_000_000;
    this.trimEvery = Math.max(1, Math.min(TRIM_EVERY_MAX, Math.floor(this.maxRows / 100)));
    if (opts.readonly) {
      this.conn = new Database(path, { readonly: true, fileMustExist: true });
      this.prepare(this.conn);
      return;
    }
    try {
      this.open();
    } catch (e) {
      if (e instanceof StoreSchemaError) throw e;
      this.failed(e);
    }
    this.prune();
    this.pruneTimer = setInterval(() => this.prune(), PRUNE_EVERY_MS).unref();
  }

  /** The open connection (tests, `bitad stats`); throws while the store could not open its file. */
  get db(): Database.Database {
    if (!this.conn) throw new Error(`store ${this.path} is not open: ${this.fault ?? 'closed'}`);
    return this.conn;
  }

  health(): ComponentHealth {
    const n = this.pending.length;
    const details = { path: this.path, buffered: n, dropped: this.dropped };
    if (!this.fault) return { status: 'ok', ...details };
    return { status: 'degraded', reason: `${this.fault}: ${n} row${n === 1 ? '' : 's'} waiting, ${this.dropped} dropped`, ...details };
  }

  /**
   * Queues a request row for this turn's commit; `done` runs once the row is committed, or, when
   * the file cannot be written, once the row is safe in the buffer (never before the attempt).
   */
  recordRequest(row: RequestRow, done?: () => void): void {
    if (done) this.waiters.push(done);
    this.enqueue({ table: 'requests', row });
    if (!this.commitScheduled) this.commitScheduled = setImmediate(() => this.commit());
  }

  recordLoad(row: LoadSampleRow): void {
    this.enqueue({ table: 'load', row });
    if (!this.loadTimer && !this.commitScheduled) this.loadTimer = setTimeout(() => this.commit(), this.opts.flushMs ?? 500);
  }

  /** Writes everything buffered now (also while degraded), then runs waiting callbacks. */
  flush(): void {
    this.cancelScheduled();
    this.write();
    this.release();
  }

  /** Retention: drop rows older than retentionDays, then the oldest beyond maxRows; never throws. */
  prune(now = Date.now()): { requests: number; load: number } {
    if (!this.conn) return { requests: 0, load: 0 };
    const cutoff = now - (this.opts.retentionDays ?? 30) * 86_400_000;
    const db = this.conn;
    try {
      const requests = db.prepare('DELETE FROM requests WHERE ts < ?').run(cutoff).changes + this.trim(db, 'requests');
      const load = db.prepare('DELETE FROM load_samples WHERE ts < ?').run(cutoff).changes + this.trim(db, 'load');
      return { requests, load };
    } catch (e) {
      // Pruning frees nothing until a checkpoint anyway; the next hourly run tries again.
      this.opts.log?.warn({ err: e }, `store retention skipped: ${describeFault(e)}`);
      return { requests: 0, load: 0 };
    }
  }

  requestsSince(sinceMs: number): RequestRow[] {
    return this.db.prepare('SELECT * FROM requests WHERE ts >= ? ORDER BY id').all(sinceMs) as RequestRow[];
  }

  loadSince(sinceMs: number): LoadSampleRow[] {
    return this.db.prepare('SELECT * FROM load_samples WHERE ts >= ? ORDER BY ts').all(sinceMs) as LoadSampleRow[];
  }

  /** Writes what is buffered (one last try), runs waiting callbacks and closes the file. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (!this.opts.readonly) this.flush();
    if (this.pending.length) this.opts.log?.error({ lost: this.pending.length }, `store closed with rows unwritten: ${this.fault}`);
    try {
      this.conn?.close();
    } catch (e) {
      this.opts.log?.warn({ err: e }, 'store close failed');
    }
    this.conn = null;
  }

  /** Creates the directory and file with private modes, opens WAL, migrates, prepares inserts. */
  private open(): Database.Database {
    createPrivateDirs(dirname(this.path));
    createPrivateFile(this.path);
    const db = new Database(this.path, { timeout: BUSY_TIMEOUT_MS });
    try {
      db.pragma('journal_mode = WAL');
      db.pragma(`synchronous = ${this.opts.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
      migrate(db);
      this.prepare(db);
    } catch (e) {
      db.close();
      throw e;
    }
    // SQLite gives -wal/-shm the database file's mode; tighten files an older bitad left wider.
    for (const suffix of FILE_SUFFIXES) tryChmod(this.path + suffix, FILE_MODE);
    this.conn = db;
    for (const suffix of FILE_SUFFIXES) this.opened[suffix] = fileId(this.path + suffix);
    return db;
  }

  private prepare(db: Database.Database): void {
    this.insertRequest = db.prepare(
      `INSERT INTO requests (${REQUEST_COLUMNS.join(',')}) VALUES (${REQUEST_COLUMNS.map((c) => '@' + c).join(',')})`,
    );
    this.insertLoad = db.prepare(
      `INSERT OR REPLACE INTO load_samples (${LOAD_COLUMNS.join(',')}) VALUES (${LOAD_COLUMNS.map((c) => '@' + c).join(',')})`,
    );
  }

  private enqueue(p: Pending): void {
    if (this.closed) {
      this.dropped++;
      this.release();
      return;
    }
    this.pending.push(p);
    const over = this.pending.length - this.maxBuffered;
    if (over > 0) {
      this.pending.splice(0, over);
      this.dropped += over;
    }
  }

  /** End of the turn: one transaction for everything recorded, then the callbacks. */
  private commit(): void {
    this.cancelScheduled();
    // While degraded only the retry timer touches the file: a full disk is not hammered per request.
    if (!this.fault) this.write();
    this.release();
  }

  /** One attempt to open (if needed) and write every pending row in one transaction. */
  private write(): void {
    try {
      const db = this.connection();
      const batch = this.pending;
      let refused = 0;
      db.transaction(() => {
        for (const p of batch) if (!this.insert(p)) refused++;
      })();
      this.pending = this.pending.slice(batch.length);
      if (refused) {
        this.dropped += refused;
        this.opts.log?.error({ refused }, 'store refused rows (a bug in bitad); dropped');
      }
      this.recovered();
      for (const p of batch) this.sinceTrim[p.table]++; // refused rows too: an overcount only trims early
      this.trimIfDue(db);
    } catch (e) {
      this.failed(e);
    }
  }

  /** The open connection, or a new one when the file at the path is no longer the one it has open. */
  private connection(): Database.Database {
    if (this.conn && !sameFile(this.opened[''], fileId(this.path))) this.dropOrphan();
    return this.conn ?? this.open();
  }

  /**
   * `rm bitad.db` (or a file moved over it) leaves the connection writing into a file no path
   * names: `bitad stats` would not see those rows and they would vanish at close, with the store
   * saying ok. So that connection is closed and the caller opens, or creates, the file at the path.
   * SQLite does not checkpoint a moved database at close and leaves its -wal: opened beside the
   * file moved in, that WAL's pages would be laid over it (seen in test/daemon/store.test.ts), so
   * the -wal and -shm still at the path that are the orphan's own are removed.
   */
  private dropOrphan(): void {
    this.opts.log?.warn({ path: this.path }, 'store file was deleted or replaced while open; writing to the file at its path from now on');
    try {
      this.conn!.close();
    } catch (e) {
      this.opts.log?.warn({ err: e }, 'closing the deleted store file failed');
    }
    this.conn = null;
    for (const suffix of ['-wal', '-shm'] as const) {
      if (sameFile(this.opened[suffix], fileId(this.path + suffix))) unlinkSync(this.path + suffix);
    }
  }

  /** Keeps each table within maxRows + trimEvery between the hourly prunes (TRIM_EVERY_MAX). */
  private trimIfDue(db: Database.Database): void {
    for (const table of ['requests', 'load'] as const) {
      if (this.sinceTrim[table] < this.trimEvery) continue;
      try {
        this.trim(db, table);
      } catch (e) {
        // The rows are committed; a failed trim is retried after another trimEvery rows.
        this.opts.log?.warn({ err: e, table }, `store trim skipped: ${describeFault(e)}`);
      }
    }
  }

  /** Deletes the oldest rows of a table beyond maxRows; returns how many. Throws on a fault. */
  private trim(db: Database.Database, table: Table): number {
    this.sinceTrim[table] = 0; // before the attempt: a failing trim is not retried on every commit
    return db.prepare(TRIM_SQL[table]).run(this.maxRows).changes;
  }

  /** Inserts one row; false when SQLite refused that row (not the disk), so it is skipped. */
  private insert(p: Pending): boolean {
    try {
      if (p.table === 'requests') this.insertRequest!.run(p.row);
      else this.insertLoad!.run(p.row);
      return true;
    } catch (e) {
      if (isRowFault(e)) return false;
      throw e;
    }
  }

  private failed(e: unknown): void {
    const fault = describeFault(e);
    if (fault !== this.fault) {
      this.opts.log?.error({ err: e, buffered: this.pending.length }, `store degraded: ${fault}; rows are kept in memory and retried`);
    }
    this.fault = fault;
    if (this.retryTimer || this.closed) return;
    const wait = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.write();
    }, wait).unref();
  }

  private recovered(): void {
    this.retryMs = RETRY_MIN_MS;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.fault === null) return;
    this.opts.log?.info({ dropped: this.dropped }, `store recovered from: ${this.fault}`);
    this.fault = null;
  }

  private release(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const done of waiters) {
      try {
        done();
      } catch (e) {
        this.opts.log?.error({ err: e }, 'store callback failed');
      }
    }
  }

  private cancelScheduled(): void {
    if (this.commitScheduled) clearImmediate(this.commitScheduled);
    if (this.loadTimer) clearTimeout(this.loadTimer);
    this.commitScheduled = null;
    this.loadTimer = null;
  }
}

interface FileId {
  dev: number;
  ino: number;
}

/** Which file the path names now; null when there is none. */
function fileId(path: string): FileId | null {
  const st = statSync(path, { throwIfNoEntry: false });
  return st ? { dev: st.dev, ino: st.ino } : null;
}

function sameFile(a: FileId | null, b: FileId | null): boolean {
  return a !== null && b !== null && a.dev === b.dev && a.ino === b.ino;
}

/** Creates the database file with FILE_MODE (umask-proof) before SQLite would create it 0644. */
function createPrivateFile(path: string): void {
  const fd = openSync(path, 'a', FILE_MODE);
  try {
    fchmodSync(fd, FILE_MODE);
  } finally {
    closeSync(fd);
  }
}

function tryChmod(path: string, mode: number): void {
  try {
    chmodSync(path, mode);
  } catch {
    // Absent (no -wal yet) or not ours (a root-owned file): SQLite's own mode rules apply.
  }
}
