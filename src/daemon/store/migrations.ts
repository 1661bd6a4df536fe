/**
 * Schema versions, applied in order; `PRAGMA user_version` records how many ran. Never edit a
 * shipped migration: append a new one.
 */
export const MIGRATIONS: string[] = [
  // 1: request log and load samples
  `CREATE TABLE requests (
     id INTEGER PRIMARY KEY,
     ts INTEGER NOT NULL,              -- epoch ms at receipt
     transport TEXT NOT NULL,          -- mqtt | socket
     kind TEXT,                        -- generate | chat | null when the request was unreadable
     txn TEXT,                         -- the client's transaction id
     model TEXT NOT NULL,
     prompt_tokens INTEGER,
     output_tokens INTEGER,
     queue_ms REAL,                    -- receipt -> engine start
     ttft_ms REAL,                     -- engine start -> first chunk
     tpot_ms REAL,                     -- mean per output token after the first
     engine_ms REAL,                   -- wall time inside engine.generate
     total_ms REAL,                    -- receipt -> final reply
     tokens_per_s REAL,
     mean_accepted_tokens REAL,        -- committed tokens per tree step
     tree_budget INTEGER,              -- draft-tree row budget at the end of the request
     rows_per_step REAL,               -- mean rows fed per step
     finish_reason TEXT,               -- eos | length | stop | cancelled
     outcome TEXT NOT NULL,            -- ok | error
     error_code TEXT
   );
   CREATE INDEX requests_ts ON requests(ts);
   CREATE TABLE load_samples (
     ts INTEGER PRIMARY KEY,
     cpu_load_pct REAL,
     cpu_temp_c REAL,
     gpu_load_pct REAL,
     mem_used_mb REAL,
     rss_mb REAL,
     queue_depth INTEGER,
     tree_budget INTEGER,
     throttled INTEGER
   );`,
  // 2: which tree policy sized the request (load-aware tree)
  `ALTER TABLE requests ADD COLUMN tree_policy TEXT;  -- throughput | neighbourly | fixed | plain`,
];
