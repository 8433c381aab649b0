/**
 * CPU random kernels: the Philox stream of `rng.ts`, computed in f32 and stored in the output's
 * dtype (f16/bf16 rounded to nearest even). The op spec has already checked that the dtype is a
 * float type and that seed and offset are non-negative safe integers.
 */
import type { Kernel } from "../backend.js";
import { fillNormal, fillUniform } from "../rng.js";
import { type CpuStorage, writeFloat } from "./storage.js";

export const randomUniformKernel: Kernel<"randomUniform", CpuStorage> = ({ outputs, attrs }) => {
  const { out, commit } = writeFloat(outputs[0]);
  fillUniform(out, attrs);
  commit();
};

export const randomNormalKernel: Kernel<"randomNormal", CpuStorage> = ({ outputs, attrs }) => {
  const { out, commit } = writeFloat(outputs[0]);
  fillNormal(out, attrs);
  commit();
};
