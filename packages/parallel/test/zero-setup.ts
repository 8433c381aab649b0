/** What zero.test.ts and its worker share: targets, and parameters and optimizer state as plain numbers. */
import { flattenTree, mapTree } from "@lightning-ts/autograd";
import type { OptimizerMeta, OptimizerState } from "@lightning-ts/autograd/optim";
import { type DType, type Tensor, tensor } from "@lightning-ts/tensor";
import { initParams, type TnlParams } from "@lightning-ts/tnl";
import { nextTokenTargets } from "../src/index.js";
import { tinyConfig } from "./tnl-setup.js";

/** Next-token targets of a global batch, one per row ignored by its global index (so any rank count gives the same targets). */
export function globalTargets(batch: number[][]): number[][] {
  const targets = nextTokenTargets(batch);
  targets.forEach((row, g) => (row[(g * 3) % (row.length - 1)] = -100));
  return targets;
}

export type Values = Record<string, number[]>;
export interface SavedState {
  tensors: Record<string, { shape: number[]; dtype: DType; data: number[] }>;
  meta: OptimizerMeta;
}

export const paramValues = (params: TnlParams): Values => Object.fromEntries([...flattenTree(params)].map(([path, t]) => [path, Array.from(t.dataSync())]));

/** The tiny TNL's parameters: seed 7's, or `values` by path. */
export function paramsFrom(values?: Values): TnlParams {
  const init = initParams(tinyConfig(), { seed: 7 });
  if (!values) return init;
  const out = mapTree(init, (t, path) => tensor(values[path], t.shape, { dtype: t.dtype })) as TnlParams;
  for (const t of flattenTree(init).values()) t.dispose();
  return out;
}

export function saveState(state: OptimizerState): SavedState {
  const tensors = Object.fromEntries(Object.entries(state.tensors).map(([k, t]) => [k, { shape: [...t.shape], dtype: t.dtype, data: Array.from(t.dataSync()) }]));
  return { tensors, meta: state.meta };
}

export function loadState(saved: SavedState): OptimizerState {
  const tensors: Record<string, Tensor> = {};
  for (const [k, { shape, dtype, data }] of Object.entries(saved.tensors)) tensors[k] = tensor(data, shape, { dtype });
  return { tensors, meta: saved.meta };
}
