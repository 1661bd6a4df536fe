/** Model package loading and validation (docs/package-format.md). Fails fast with a typed error. */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { EngineError } from './types.js';

export const FORMAT = 'bitad-model';
export const FORMAT_VERSION = 1;

export interface Architecture {
  family: string;
  dim: number;
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  head_dim: number;
  hidden_dim: number;
  vocab_size: number;
  max_positions: number;
  rope_theta: number;
  n_masks: number;
  n_prefix: number;
}

export interface Manifest {
  format: string;
  format_version: number;
  name: string;
  architecture: Architecture;
  bita: { mask_token_ids: number[]; prefix_slots: number } | null;
  tokenizer: { file: string; config?: string; bos_id: number | null; eos_id: number | null; add_bos: boolean };
  chat_template?: string | null;
  graphs: Record<string, string>;
  io: { past_key: string; past_value: string; new_key: string; new_value: string; bias_hidden?: number };
  files: Record<string, { bytes: number; sha256: string }>;
  /** Extra draft sources shipped with the model (optional). */
  drafts?: { ngram?: { file: string } };
  eval?: Record<string, unknown>;
  license?: string;
  /** Set by `bitatool train-mask-aware`: the base weights changed, from what and how far (docs/models.md). */
  fine_tuned?: Record<string, unknown>;
}

export interface ModelPackage {
  dir: string;
  manifest: Manifest;
  /** Absolute path of the graph chosen for this load. */
  graphPath: string;
  variant: string;
}

function invalid(file: string, problem: string): EngineError {
  return new EngineError('package_invalid', `${file}: ${problem}`);
}

const INT_FIELDS: (keyof Architecture)[] = [
  'dim', 'n_layers', 'n_heads', 'n_kv_heads', 'head_dim', 'hidden_dim', 'vocab_size', 'max_positions',
];

function checkArchitecture(file: string, a: Architecture): void {
  if (!a || typeof a !== 'object') throw invalid(file, 'missing "architecture"');
  for (const k of INT_FIELDS) {
    if (!Number.isInteger(a[k]) || (a[k] as number) <= 0) throw invalid(file, `architecture.${k} must be a positive integer`);
  }
  if (a.n_heads % a.n_kv_heads !== 0) throw invalid(file, 'architecture.n_heads must be a multiple of n_kv_heads');
  a.n_masks ??= 0;
  a.n_prefix ??= 0;
}

function checkBita(file: string, m: Manifest): void {
  const V = m.architecture.vocab_size;
  if (m.bita === null || m.bita === undefined) {
    m.bita = null;
    return;
  }
  const ids = m.bita.mask_token_ids;
  if (!Array.isArray(ids) || ids.length === 0 || ids.length !== m.architecture.n_masks) {
    throw invalid(file, `bita.mask_token_ids must list architecture.n_masks (${m.architecture.n_masks}) ids`);
  }
  ids.forEach((id, j) => {
    if (id !== V + j) throw invalid(file, `bita.mask_token_ids[${j}] is ${id}, expected ${V + j} (V + j)`);
  });
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Reads and validates a package; verifies the sha256 of every listed file. */
export function loadPackage(dir: string, variant = 'default'): ModelPackage {
  const root = resolve(dir);
  const file = join(root, 'manifest.json');
  if (!existsSync(file)) throw invalid(file, 'not found (is this a bitad model package folder?)');
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(file, 'utf8')) as Manifest;
  } catch (e) {
    throw invalid(file, `not valid JSON (${(e as Error).message})`);
  }
  if (m.format !== FORMAT) throw invalid(file, `format is ${JSON.stringify(m.format)}, expected "${FORMAT}"`);
  if (m.format_version !== FORMAT_VERSION) {
    throw invalid(file, `format_version ${m.format_version} is not supported (this bitad reads ${FORMAT_VERSION})`);
  }
  checkArchitecture(file, m.architecture);
  checkBita(file, m);
  if (!m.tokenizer?.file) throw invalid(file, 'missing tokenizer.file');
  if (!m.graphs || typeof m.graphs !== 'object') throw invalid(file, 'missing "graphs"');
  if (!m.files || typeof m.files !== 'object') throw invalid(file, 'missing "files"');
  for (const [name, meta] of Object.entries(m.files)) {
    const p = join(root, name);
    if (!existsSync(p)) throw invalid(p, 'listed in manifest.json but missing');
    const got = sha256(p);
    if (got !== meta.sha256) throw invalid(p, `sha256 mismatch (manifest ${meta.sha256}, file ${got})`);
  }
  const chosen = variant === 'default' ? (m.graphs.default ?? 'fp32') : variant;
  const graph = m.graphs[chosen];
  if (!graph || chosen === 'default') {
    const have = Object.keys(m.graphs).filter((k) => k !== 'default').join(', ');
    throw invalid(file, `graph variant "${chosen}" not in manifest (have: ${have})`);
  }
  for (const f of [graph, m.tokenizer.file, ...(m.drafts?.ngram ? [m.drafts.ngram.file] : [])]) {
    if (!m.files[f]) throw invalid(file, `${f} is not listed in "files" (no sha256 to verify)`);
  }
  const graphPath = join(root, graph);
  const op = batchVariantOp(graphPath);
  if (op) {
    const others = Object.keys(m.graphs).filter((k) => k !== 'default' && k !== chosen && !batchVariantOp(join(root, m.graphs[k])));
    throw invalid(graphPath, `graph variant "${chosen}" is not batch-invariant: its ${op} quantises activations with one scale for all rows fed together, so a tree step's rows change each other's results and tree decoding would not emit what plain decoding emits${others.length ? `; use ${others.join(' or ')}` : ''}`);
  }
  return { dir: root, manifest: m, graphPath, variant: chosen };
}

/**
 * Operators whose result for one row depends on the other rows of the same run: they quantise the
 * activations of a whole run with one scale (the `int8` variant's DynamicQuantizeMatMul), so a row
 * verified inside a tree is not computed as it would be alone. `int8w` quantises weights only.
 * Op types are plain strings in the ONNX protobuf, so a byte search finds them.
 */
const BATCH_VARIANT_OPS = ['DynamicQuantizeMatMul', 'DynamicQuantizeLinear', 'MatMulIntegerToFloat'];

/** The first batch-variant operator the graph file names, or null. */
export function batchVariantOp(graphPath: string): string | null {
  let bytes: Buffer;
  try {
    bytes = readFileSync(graphPath);
  } catch {
    return null; // a missing graph is reported where it is opened
  }
  return BATCH_VARIANT_OPS.find((op) => bytes.includes(op)) ?? null;
}

/**
 * Default ORT intra-op threads. Small models are bound by per-node dispatch, where a second thread
 * only adds synchronisation: on the 2-core VM stories260K ran 1.7x faster with 1 thread than with
 * 2 (bench, interleaved). Bigger models get one thread per core, up to 4.
 */
export function threadsFor(a: Architecture, cores = availableParallelism()): number {
  const params = a.n_layers * (2 * a.dim * a.dim + 2 * a.dim * a.n_kv_heads * a.head_dim + 3 * a.dim * a.hidden_dim);
  return params < 2_000_000 ? 1 : Math.max(1, Math.min(4, cores));
}
