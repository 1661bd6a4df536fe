/**
 * The pure decoding core of bitad: trees, bias and positions, drafts, verification, sampling and a
 * step-wise Decoder, all over one injected seam (TreeModel). No I/O, no onnxruntime.
 *
 * Typical use by the engine (in its worker):
 *   const decoder = new Decoder(model, { maxRows: 64, budget: 16 });   // buffers allocated here
 *   let r = decoder.start(promptIds, { mode, temperature, topK, topP, seed }); // prefill, 1st token
 *   emit(r.tokens, r.count);
 *   while (!r.contextFull && !stop) { decoder.setBudget(controller.rows()); r = decoder.step(); emit(r.tokens, r.count); }
 * EOS, maxTokens, stop strings and cancellation are checked by the caller between steps; a step can
 * commit several tokens, so the caller cuts the last chunk at EOS / maxTokens itself.
 * StepResult is a reused object: copy what you keep before the next call.
 */
export { NEG, type TreeModel } from './model.js';
export { PromptTooLongError, DecoderStateError } from './errors.js';
export { Decoder, type DecoderOptions, type GenerationOptions, type StepResult } from './decoder.js';
export { Rng } from './rng.js';
export { GREEDY, argmax, isGreedy, sampleIndex, TargetDistribution, type SamplingParams } from './sampling.js';
export { expNonPositive } from './fastexp.js';
export { rowsAttentionBias } from './bias.js';
export { DraftTree, SOURCE_CONTEXT, SOURCE_MASK, SOURCE_NGRAM, treeAttentionBias } from './tree.js';
export { NgramTable } from './ngram.js';
export { MaskDrafts, ContextDrafts, contextDrafts, draftsFromMasks } from './drafts.js';
export { TreeBuilder, type BuildLimits } from './build.js';
export { Acceptance, VerifiedPath, acceptPath, verifyGreedy, verifySampling } from './verify.js';
