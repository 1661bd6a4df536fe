/** The engine's public surface: what the daemon, CLI and benchmarks see. */

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface GenerateRequest {
  /** Plain prompt text; exactly one of prompt/messages. */
  prompt?: string;
  /** Chat messages, rendered with the package's chat template (or a plain fallback). */
  messages?: ChatMessage[];
  maxTokens?: number; // default 128
  temperature?: number; // 0 = greedy (default)
  topP?: number; // default 1
  topK?: number; // default 0 = off
  seed?: number;
  stop?: string[];
  /** 'bita' (default when the package has adapters) or 'plain' (Q=1 autoregressive). */
  mode?: 'bita' | 'plain';
}

export interface Chunk {
  text: string;
  tokens: number[];
}

export type FinishReason = 'eos' | 'length' | 'stop' | 'cancelled';

export interface GenerateStats {
  promptTokens: number;
  outputTokens: number;
  prefillMs: number;
  ttftMs: number;
  totalMs: number;
  /** Mean time per output token after the first. */
  tpotMs: number;
  tokensPerS: number;
  steps: number;
  /** Committed tokens per step (accepted drafts + 1), counted before the output is cut at EOS / maxTokens / a stop string. */
  meanAcceptedTokens: number;
  /** Histogram: index n = steps that committed n tokens. */
  acceptedHistogram: number[];
  meanRowsPerStep: number;
  /** Accepted draft tokens by source (a token two sources proposed counts for both). */
  acceptedBySource: { mask: number; context: number; ngram: number };
  /** Sum of session.run time and of everything else in the step loop. */
  runMs: number;
  hostMs: number;
  /** What sized this request's trees: the active tree policy, or 'plain' (mode plain). */
  treePolicy: string;
  finishReason: FinishReason;
}

export interface GenerateResult {
  text: string;
  tokens: number[];
  stats: GenerateStats;
}

export interface EngineInfo {
  model: string;
  contextLength: number;
  vocabSize: number;
  bita: boolean;
  /** Rows the tree steps use now (= tree.rows). */
  treeBudget: number;
  /** The manifest's `fine_tuned` record (base weights changed by mask-aware training), else null. */
  fineTuned: Record<string, unknown> | null;
  tree: TreeInfo;
}

/** The load-aware tree sizing as it stands (docs/daemon.md, "Load-aware tree"). */
export interface TreeInfo {
  /** Configured policy. */
  policy: import('./load.js').TreePolicy;
  /** What sizes trees now: auto resolves to throughput or neighbourly. */
  active: 'throughput' | 'neighbourly' | 'fixed';
  /** Rows per step the sizing chose last (what steps use; exploration steps aside). */
  rows: number;
  minRows: number;
  maxRows: number;
  /** Why the budget is what it is, for people. */
  reason: string;
  /** Budget changes since the engine started. */
  changes: number;
}

export type EngineErrorCode =
  | 'bad_request'
  | 'prompt_too_long'
  | 'cancelled'
  | 'model_error'
  | 'package_invalid';

export class EngineError extends Error {
  constructor(
    readonly code: EngineErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'EngineError';
  }
}

export interface GenerateOptions {
  signal?: AbortSignal;
  onChunk?: (chunk: Chunk) => void;
}

/** One model, one generation at a time (the scheduler serialises requests). */
export interface Engine {
  info(): EngineInfo;
  generate(req: GenerateRequest, opts?: GenerateOptions): Promise<GenerateResult>;
  /** Row budget for policy fixed and for sampled requests (nodes + mask rows). */
  setTreeBudget(rows: number): void;
  /** How the tree is sized from the next step on. */
  setTreePolicy(policy: import('./load.js').TreePolicy): void;
  /** The board's latest load reading (the sensors call this every few hundred ms). */
  setLoad(load: import('./load.js').BoardLoad): void;
  /** Bounded: resolves even when a generation is stuck (its call is rejected with model_error). */
  close(): Promise<void>;
  /**
   * Registers a listener for the engine dying on its own (worker crash or exit; not close()).
   * After that every in-flight and later generate() rejects with model_error at once. Absent on
   * engines that cannot die (in-process ones).
   */
  onDeath?(listener: (reason: string) => void): void;
}
