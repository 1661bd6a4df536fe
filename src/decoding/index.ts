/** The pure decoding core: trees, bias and positions, drafts, verification, sampling, the decoder. */
export { NEG, type TreeModel } from './model.js';
export { PromptTooLongError, DecoderStateError } from './errors.js';
export { Rng } from './rng.js';
export { GREEDY, argmax, isGreedy, sampleIndex, TargetDistribution, type SamplingParams } from './sampling.js';
export { rowsAttentionBias } from './bias.js';
export { DraftTree, SOURCE_CONTEXT, SOURCE_MASK, treeAttentionBias } from './tree.js';
export { MaskDrafts, contextDraft, draftsFromMasks } from './drafts.js';
export { TreeBuilder, type BuildLimits } from './build.js';
export { Acceptance, VerifiedPath, acceptPath, verifyGreedy, verifySampling } from './verify.js';
export { Decoder, type DecoderOptions, type GenerationOptions, type StepResult } from './decoder.js';
