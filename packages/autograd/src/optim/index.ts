/**
 * @lightning-ts/autograd/optim: optimizers (with f32 master weights for half-precision parameters), gradient clipping, loss scaling for f16 and learning-rate schedules.
 *
 * @example
 * import { AdamW, clipGradNorm, warmupCosine } from "@lightning-ts/autograd/optim";
 * const opt = new AdamW({ lr: warmupCosine({ peak: 1e-3, warmupSteps: 10, totalSteps: 200 }) });
 * const { grads: clipped } = clipGradNorm(grads, 1.0);
 * params = opt.step(params, clipped);
 */
export { AdamW, type AdamWSettings } from "./adamw.js";
export { SGD, type SGDSettings } from "./sgd.js";
export {
  Optimizer,
  type BaseSettings,
  type HalfDType,
  type OptimizerMeta,
  type OptimizerState,
  type ParamGroup,
  type Resolved,
  type Slots,
  type TentativeStep,
  type Update,
} from "./optimizer.js";
export { clipGradNorm } from "./clip.js";
export { allFinite, GradScaler, type GradScalerSettings, type GradScalerState } from "./scaler.js";
export { constant, cosineDecay, linearWarmup, sequence, warmupCosine, type Schedule } from "./schedule.js";
export { loadOptimizerState, META_KEY, saveOptimizerState, type Stateful } from "./io.js";
