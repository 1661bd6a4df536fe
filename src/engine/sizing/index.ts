/** Load-aware tree sizing (bita.md section 6): cost and gain models, the pure pick, the stateful sizer. */
export { StepCost } from './cost.js';
export { GainCurve } from './gain.js';
export { AUTO_LOSS, bestBudget, rateAt, NEIGHBOURLY_LOSS, type SizingPolicy } from './budget.js';
export {
  TreeSizer, TREE_SIZER_DEFAULTS, SIZER_MAX_ROWS, type TreeSizerConfig, type TreeSizerState, type ActivePolicy,
} from './sizer.js';
