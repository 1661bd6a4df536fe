/**
 * Decoder: drives generation over a TreeModel, one step at a time, so the caller (the engine's worker)
 * checks EOS, stop sequences, maxTokens and cancellation at step boundaries.
 *
 * - start(prompt): prefill in chunks; the last chunk carries mask group 0 hanging off the last prompt
 *   token (bita.md section 4); only the prompt's K/V are kept. Emits the first token.
 * - step(): feed b (the last committed token, not yet fed), the draft tree and its mask groups, verify,
 *   commit b + the accepted path, and draft the next tree from the masks of the accepted path's group.
 * - mode 'plain' feeds b alone (Q = 1): the fair baseline.
 * Context length: a token is only emitted if its position is < maxPositions, so the tree is cut to
 * the depths that still fit and a step after the context is full throws.
 * All buffers are allocated in the constructor; a step allocates nothing but a few typed-array views.
 */
import { TreeBuilder, type BuildLimits } from './build.js';
import { ContextDrafts, contextDrafts, draftsFromMasks, MaskDrafts } from './drafts.js';
import { DecoderStateError, PromptTooLongError } from './errors.js';
import { rowsAttentionBias } from './bias.js';
import type { TreeModel } from './model.js';
import { Rng } from './rng.js';
import { argmax, isGreedy, TargetDistribution, type SamplingParams } from './sampling.js';
import { CONTEXT_ALT_HEAD, DraftTree, SOURCE_CONTEXT, SOURCE_MASK, SOURCE_NGRAM, treeAttentionBias } from './tree.js';
import type { NgramTable } from './ngram.js';
import { Acceptance, acceptPath, VerifiedPath, verifyGreedy, verifySampling } from './verify.js';

export interface DecoderOptions {
  /** Largest row budget a step may ever use; sizes the buffers. Default 64. */
  maxRows?: number;
  /** Initial row budget per step (b + nodes + mask rows); 1 = plain Q=1 steps. Default 16. */
  budget?: number;
  /** Candidates per depth taken from each mask row. Default 4. */
  maskTopK?: number;
  /** Use prompt-lookup drafts. Default true. */
  contextDrafts?: boolean;
  /** n-gram lengths tried for prompt lookup, longest first. Defaults 1 and 3. */
  minNgram?: number;
  maxNgram?: number;
  /** Longest context-draft chain. Default 8. */
  maxContextDraft?: number;
  /** Context-draft chains with distinct first tokens (1 = plain prompt lookup). Default 3. */
  maxContextChains?: number;
  /** N-gram table of the model's own output (package ngram.bin): its greedy walk becomes chain 0. */
  ngram?: NgramTable | null;
  /** Initial per-token acceptance estimate of context drafts. Default 0.5. */
  contextRate?: number;
  /** Initial acceptance estimate of an alternative chain's first token. Default 0.2. */
  contextAltRate?: number;
  /** Initial estimate of the committed tokens a mask group brings. Default 1. */
  groupGain?: number;
  /** Learn contextRate, contextAltRate and groupGain from verification outcomes. Default true. */
  adaptive?: boolean;
  /** Prompt rows fed per prefill forward. Default 64. */
  prefillChunk?: number;
}

export interface GenerationOptions {
  /** 'bita' (default): tree steps; 'plain': Q=1 autoregressive steps. */
  mode?: 'bita' | 'plain';
  temperature?: number; // 0 = greedy (default)
  topK?: number; // 0 = off
  topP?: number; // 1 = off
  seed?: number;
}

/** One step's outcome; the decoder reuses this object, read it before the next call. */
export interface StepResult {
  /** New committed tokens are tokens[0..count) (a reused buffer). */
  readonly tokens: Int32Array;
  count: number;
  /** Rows fed to the model (for start(): all prefill rows). */
  rowsFed: number;
  nodes: number;
  maskGroups: number;
  /** Accepted draft nodes (count - 1), and of those the ones each source proposed (a node both
   *  sources proposed counts in both and in acceptedBoth). */
  accepted: number;
  acceptedMask: number;
  acceptedContext: number;
  acceptedBoth: number;
  /** Accepted nodes the n-gram table proposed (also counted in acceptedContext if lookup did too). */
  acceptedNgram: number;
  draftedNgram: number;
  /** Nodes fed per source (same double counting). */
  draftedMask: number;
  draftedContext: number;
  /** True when no further token fits in maxPositions: step() would throw. */
  contextFull: boolean;
  /** Rows of Decoder.gainCurve this step measured (0 = none; see measureGainNextStep). */
  gainRows: number;
}

const EMA_ALPHA = 0.05;
/** Every this many steps group 0 is placed whatever its expected gain, to keep measuring it. */
const MASK_EXPLORE_EVERY = 16;

export class Decoder {
  readonly maxRows: number;
  /** Committed tokens, prompt first: tokens[0..length). */
  readonly tokens: Int32Array;
  length = 0;
  promptLength = 0;

  private readonly M: number;
  private readonly V: number;
  private readonly maxQ: number;
  private budgetRows: number;
  private readonly opts: Required<Omit<DecoderOptions, 'ngram'>>;
  private readonly ngram: NgramTable | null;
  private readonly ids: Int32Array; // [maxQ]
  private readonly positions: Int32Array; // [maxQ]
  private readonly parentRow: Int32Array; // [maxQ] prefill scratch
  private readonly commitRows: Int32Array; // [maxQ] prefill commit list 0..c-1
  private readonly bias: Float32Array; // [maxQ, maxPositions + maxQ] row-major
  private readonly tree: DraftTree;
  private readonly builder: TreeBuilder;
  private readonly masks: MaskDrafts;
  private readonly context: ContextDrafts;
  private readonly path: VerifiedPath;
  private readonly acceptance = new Acceptance();
  private readonly dist: TargetDistribution;
  private readonly rng = new Rng(0);
  private readonly result: StepResult;
  private readonly limits: BuildLimits = {
    budget: 1,
    M: 0,
    maxDepth: 0,
    maxGroupDepth: 0,
    groupGain: 0,
    contextRate: 0,
    contextAltRate: 0,
    exploreMasks: false,
  };
  private sampling: SamplingParams = { temperature: 0, topK: 0, topP: 1 };
  private plain = false;
  private fed = 0; // rows in the model's cache
  private contextRate: number;
  private contextAltRate: number;
  private groupGain: number;
  private steps = 0; // tree steps since the estimates were reset
  /** The greedy requests' learned rates while a sampled request runs on the defaults (see start). */
  private greedyRates: { contextRate: number; contextAltRate: number; groupGain: number; steps: number } | null = null;
  private readonly curveTree: DraftTree;
  private wantCurve = false;
  /**
   * gainCurve[r] = expected committed tokens per step of the best tree with r rows (1..maxRows;
   * gainCurve[1] = 1), from the builder's own scores; filled on steps after measureGainNextStep().
   */
  readonly gainCurve: Float64Array;

  constructor(
    private readonly model: TreeModel,
    options: DecoderOptions = {},
  ) {
    this.opts = {
      maxRows: options.maxRows ?? 64,
      budget: options.budget ?? 16,
      maskTopK: options.maskTopK ?? 4,
      contextDrafts: options.contextDrafts ?? true,
      minNgram: options.minNgram ?? 1,
      maxNgram: options.maxNgram ?? 3,
      maxContextDraft: options.maxContextDraft ?? 8,
      maxContextChains: options.maxContextChains ?? 3,
      contextRate: options.contextRate ?? 0.5,
      contextAltRate: options.contextAltRate ?? 0.2,
      groupGain: options.groupGain ?? 1,
      adaptive: options.adaptive ?? true,
      prefillChunk: options.prefillChunk ?? 64,
    };
    this.ngram = options.ngram ?? null;
    const o = this.opts;
    if (
      !(o.maxRows >= 1) ||
      !(o.prefillChunk >= 1) ||
      !(o.minNgram >= 1) ||
      !(o.maxNgram >= o.minNgram) ||
      !(o.maskTopK >= 1) ||
      !(o.maxContextDraft >= 0) ||
      !(o.maxContextChains >= 0)
    ) {
      throw new RangeError('bad decoder options');
    }
    this.M = model.maskIds.length;
    this.V = model.vocabSize;
    this.maxRows = o.maxRows;
    this.maxQ = Math.max(o.maxRows, o.prefillChunk + this.M);
    this.budgetRows = clampInt(o.budget, 1, o.maxRows);
    this.tokens = new Int32Array(model.maxPositions);
    this.ids = new Int32Array(this.maxQ);
    this.positions = new Int32Array(this.maxQ);
    this.parentRow = new Int32Array(this.maxQ);
    this.commitRows = new Int32Array(this.maxQ);
    for (let i = 0; i < this.maxQ; i++) this.commitRows[i] = i;
    this.bias = new Float32Array(this.maxQ * (model.maxPositions + this.maxQ));
    this.tree = new DraftTree(o.maxRows);
    this.curveTree = new DraftTree(o.maxRows);
    this.gainCurve = new Float64Array(o.maxRows + 1);
    this.builder = new TreeBuilder(o.maxRows, o.maxContextChains * o.maxContextDraft);
    this.masks = new MaskDrafts(this.M, o.maskTopK);
    this.context = new ContextDrafts(o.maxContextChains, o.maxContextDraft);
    this.path = new VerifiedPath(o.maxRows);
    this.dist = new TargetDistribution(this.V);
    this.contextRate = o.contextRate;
    this.contextAltRate = o.contextAltRate;
    this.groupGain = o.groupGain;
    this.result = {
      tokens: new Int32Array(o.maxRows + 1),
      count: 0,
      rowsFed: 0,
      nodes: 0,
      maskGroups: 0,
      accepted: 0,
      acceptedMask: 0,
      acceptedContext: 0,
      acceptedBoth: 0,
      acceptedNgram: 0,
      draftedNgram: 0,
      draftedMask: 0,
      draftedContext: 0,
      contextFull: false,
      gainRows: 0,
    };
  }

  /** Rows per tree step from the next step on (clamped to 1..maxRows); 1 = plain Q=1 steps. */
  setBudget(rows: number): void {
    this.budgetRows = clampInt(rows, 1, this.maxRows);
  }

  get budget(): number {
    return this.budgetRows;
  }

  /** True when no further token fits: step() would throw. */
  get contextFull(): boolean {
    return this.length >= this.model.maxPositions;
  }

  /** Generated tokens so far (a fresh array). */
  output(): number[] {
    return Array.from(this.tokens.subarray(this.promptLength, this.length));
  }

  /** Current online estimates used to size the tree (for statistics). */
  estimates(): { contextRate: number; contextAltRate: number; groupGain: number } {
    return { contextRate: this.contextRate, contextAltRate: this.contextAltRate, groupGain: this.groupGain };
  }

  /** The next tree step also fills gainCurve (one extra best-first build at maxRows, no forward). */
  measureGainNextStep(): void {
    this.wantCurve = true;
  }

  /** Forgets the learned draft rates (back to the options' initial values). */
  resetEstimates(): void {
    this.contextRate = this.opts.contextRate;
    this.contextAltRate = this.opts.contextAltRate;
    this.groupGain = this.opts.groupGain;
    this.steps = 0;
  }

  /** Resets the cache, prefills the prompt and emits the first generated token. */
  start(prompt: ArrayLike<number>, gen: GenerationOptions = {}): StepResult {
    const { model, V } = this;
    const L0 = prompt.length;
    if (L0 === 0) throw new DecoderStateError('empty prompt: at least one token (e.g. BOS) is needed');
    if (L0 >= model.maxPositions) throw new PromptTooLongError(L0, model.maxPositions);
    this.sampling = {
      temperature: gen.temperature ?? 0,
      topK: gen.topK ?? 0,
      topP: gen.topP ?? 1,
    };
    this.plain = gen.mode === 'plain';
    this.rng.seed(gen.seed ?? 0);
    this.chooseRates(isGreedy(this.sampling));
    model.truncate(0);
    this.fed = 0;
    for (let i = 0; i < L0; i++) this.tokens[i] = prompt[i];
    this.length = L0;
    this.promptLength = L0;
    this.masks.clear();

    const M = this.plain ? 0 : this.M;
    const chunk = this.opts.prefillChunk;
    let rowsFed = 0;
    let first = 0;
    for (let offset = 0; offset < L0; offset += chunk) {
      const c = Math.min(chunk, L0 - offset);
      const last = offset + c === L0;
      // Group 0 hangs off the last prompt token: mask j sits at position L0 + j.
      const group = last && M > 0 && L0 + M <= model.maxPositions ? M : 0;
      const q = c + group;
      for (let i = 0; i < c; i++) {
        this.ids[i] = this.tokens[offset + i];
        this.parentRow[i] = i - 1;
      }
      for (let j = 0; j < group; j++) {
        this.ids[c + j] = model.maskIds[j];
        this.parentRow[c + j] = c + j - 1;
      }
      rowsAttentionBias(this.parentRow, q, this.fed, this.bias, this.positions);
      const logits = model.forward(this.ids, this.positions, this.bias, q);
      rowsFed += q;
      if (last) {
        first = isGreedy(this.sampling)
          ? argmax(logits, (c - 1) * V, V)
          : this.drawToken(logits, (c - 1) * V);
        if (group > 0) draftsFromMasks(logits, V, c, group, this.masks);
      }
      model.commit(this.commitRows, c);
      this.fed += c;
    }
    this.tokens[this.length++] = first;
    const r = this.resetResult();
    r.tokens[0] = first;
    r.count = 1;
    r.rowsFed = rowsFed;
    r.contextFull = this.contextFull;
    return r;
  }

  /**
   * The learned draft rates belong to the model, so greedy requests keep them. Sampled requests start
   * from the defaults (with a seed, the same request must draw the same tokens, and the tree shape
   * decides how the random stream is consumed), and the greedy rates come back afterwards instead
   * of being lost to an unrelated sampled request.
   */
  private chooseRates(greedy: boolean): void {
    if (greedy) {
      if (this.greedyRates) Object.assign(this, this.greedyRates);
      this.greedyRates = null;
      return;
    }
    this.greedyRates ??= { contextRate: this.contextRate, contextAltRate: this.contextAltRate, groupGain: this.groupGain, steps: this.steps };
    this.resetEstimates();
  }

  /** One decoding step; throws DecoderStateError when the context is full. */
  step(): StepResult {
    const { model, tree, V } = this;
    const maxPositions = model.maxPositions;
    if (this.length === 0) throw new DecoderStateError('step() before start()');
    if (this.length >= maxPositions) throw new DecoderStateError('context is full');
    if (model.cacheLength !== this.fed || this.fed !== this.length - 1) {
      throw new DecoderStateError(`model cache has ${model.cacheLength} rows, decoder expects ${this.fed}`);
    }
    const L = this.fed; // b sits at position L
    const M = this.plain ? 0 : this.M;
    const budget = this.plain ? 1 : this.budgetRows;
    // An accepted node at depth d is followed by a bonus at position L + d + 1, which must fit.
    const maxDepth = maxPositions - L - 2;
    // A group on a node at depth d has its last mask at position L + d + M.
    const maxGroupDepth = maxPositions - 1 - L - M;

    tree.reset(this.tokens[L]);
    this.context.clear();
    if (!this.plain && this.opts.contextDrafts && budget > 1 && maxDepth > 0) {
      contextDrafts(this.tokens, this.length, this.opts.minNgram, this.opts.maxNgram, this.context);
      if (this.ngram) this.context.prependNgram(this.ngram, this.tokens, this.length);
    }
    if (this.plain) this.masks.clear();
    const hadMasks = this.masks.depths > 0;
    const limits = this.limits;
    limits.budget = budget;
    limits.M = M;
    limits.maxDepth = maxDepth;
    limits.maxGroupDepth = maxGroupDepth;
    limits.groupGain = this.groupGain;
    limits.exploreMasks = this.steps++ % MASK_EXPLORE_EVERY === 0;
    limits.contextRate = this.contextRate;
    limits.contextAltRate = this.contextAltRate;
    const gainRows = this.wantCurve && !this.plain ? this.measureGain(tree.token[0]) : 0;
    this.wantCurve = false;
    this.builder.build(tree, this.masks, this.context, limits);
    const q = treeAttentionBias(tree, model.maskIds, L, this.ids, this.positions, this.bias);
    const logits = model.forward(this.ids, this.positions, this.bias, q);

    const path = isGreedy(this.sampling)
      ? verifyGreedy(tree, logits, V, this.path)
      : verifySampling(tree, logits, V, this.sampling, this.dist, this.rng, this.path);
    const acc = acceptPath(tree, path, M, this.acceptance);
    model.commit(path.rows, acc.commitCount);
    this.fed += acc.commitCount;

    const r = this.resetResult();
    for (let i = 1; i < path.length; i++) {
      const t = tree.token[path.rows[i]];
      this.tokens[this.length++] = t;
      r.tokens[r.count++] = t;
    }
    this.tokens[this.length++] = path.bonus;
    r.tokens[r.count++] = path.bonus;

    // Draft the next tree now: the logits buffer is only valid until the next forward.
    if (acc.nextMaskRow >= 0) draftsFromMasks(logits, V, acc.nextMaskRow, acc.nextMaskDepths, this.masks);
    else this.masks.clear();

    for (let i = 1; i < tree.size; i++) {
      if (tree.source[i] & SOURCE_MASK) r.draftedMask++;
      if (tree.source[i] & SOURCE_CONTEXT) r.draftedContext++;
      if (tree.source[i] & SOURCE_NGRAM) r.draftedNgram++;
    }
    if (this.opts.adaptive) this.adapt(path, hadMasks, acc.acceptedMask - acc.acceptedBoth);
    r.rowsFed = q;
    r.nodes = tree.nodeCount;
    r.maskGroups = tree.groupCount;
    r.accepted = path.accepted;
    r.acceptedMask = acc.acceptedMask;
    r.acceptedContext = acc.acceptedContext;
    r.acceptedBoth = acc.acceptedBoth;
    r.acceptedNgram = acc.acceptedNgram;
    r.contextFull = this.contextFull;
    r.gainRows = gainRows;
    return r;
  }

  /**
   * Fills gainCurve from a best-first build at maxRows without mask groups: nodes enter in
   * non-increasing score order and a node's score is the estimated probability it is accepted, so
   * the best r-row tree commits 1 + (scores of its first r - 1 nodes) tokens; with a group on the
   * root instead of the last M nodes, groupGain more. Returns the curve's last row count.
   */
  private measureGain(root: number): number {
    const limits = this.limits;
    const { budget, M } = limits;
    const t = this.curveTree;
    t.reset(root);
    limits.budget = this.maxRows;
    limits.M = 0;
    this.builder.build(t, this.masks, this.context, limits);
    limits.budget = budget;
    limits.M = M;
    const curve = this.gainCurve;
    const groupOk = M > 0 && limits.maxGroupDepth >= 0 && this.masks.depths > 0;
    curve[0] = 0;
    curve[1] = 1;
    for (let r = 2; r <= this.maxRows; r++) {
      const i = r - 1; // node added by the r-th row
      curve[r] = curve[r - 1] + (i < t.size ? t.score[i] : 0);
    }
    if (groupOk) {
      for (let r = this.maxRows; r >= 1 + M; r--) curve[r] = Math.max(curve[r], curve[r - M] + this.groupGain);
    }
    return this.maxRows;
  }

  /**
   * Online estimates that size the next trees ("keep what earns its rows"): the rate at which a context
   * node is accepted when its parent was (every context node hanging off the accepted path was
   * tested), and the tokens per step that only the masks proposed (what a mask group adds over the
   * context draft) when masks were available.
   */
  private adapt(path: VerifiedPath, hadMasks: boolean, acceptedMaskOnly: number): void {
    const tree = this.tree;
    for (let i = 0; i < path.length; i++) {
      const node = path.rows[i];
      const next = i + 1 < path.length ? path.rows[i + 1] : -1;
      for (let c = tree.firstChild[node]; c >= 0; c = tree.nextSibling[c]) {
        const role = tree.contextRole[c];
        if (role === 0) continue;
        const hit = c === next ? 1 : 0;
        if (role === CONTEXT_ALT_HEAD) this.contextAltRate += EMA_ALPHA * (hit - this.contextAltRate);
        else this.contextRate += EMA_ALPHA * (hit - this.contextRate);
      }
    }
    this.contextRate = Math.min(0.98, Math.max(0.02, this.contextRate));
    this.contextAltRate = Math.min(0.98, Math.max(0.02, this.contextAltRate));
    if (hadMasks) this.groupGain += EMA_ALPHA * (acceptedMaskOnly - this.groupGain);
  }

  private drawToken(logits: Float32Array, offset: number): number {
    this.dist.compute(logits, offset, this.sampling);
    return this.dist.sample(this.rng.next());
  }

  private resetResult(): StepResult {
    const r = this.result;
    r.count = 0;
    r.rowsFed = 0;
    r.nodes = 0;
    r.maskGroups = 0;
    r.accepted = 0;
    r.acceptedMask = 0;
    r.acceptedContext = 0;
    r.acceptedBoth = 0;
    r.acceptedNgram = 0;
    r.draftedNgram = 0;
    r.draftedMask = 0;
    r.draftedContext = 0;
    r.gainRows = 0;
    return r;
  }
}

function clampInt(x: number, lo: number, hi: number): number {
  if (!Number.isFinite(x)) return hi;
  return Math.max(lo, Math.min(hi, Math.floor(x)));
}
