/**
 * What this package and its native addon must agree on beyond the lists of @lightning-ts/tensor
 * (DTYPES, UNARY_OPS, BINARY_OPS, COMPARE_OPS, REDUCE_OPS): the launcher names and the ops whose
 * kernels report bad indices. scripts/gen-codes.mjs writes native/op_codes.gen.h from all of these,
 * and the native build fails while that header is stale, so C++ cannot drift from TypeScript.
 *
 * Only type imports here: the generator evaluates this file on its own.
 */
import type { KernelOpName } from "@lightning-ts/tensor";

/** Native launchers, by name; a launch passes the index, and each native/*.cu registers its own. */
export const LAUNCHERS = [
  "unary", "binary", "compare", "where", "fill", "cast", "copy", "zero",
  "reduce", "argmax", "stridedCopy", "take", "scatterAdd",
  "softmax", "xent", "xentBackward", "rmsNorm", "random", "matmul",
  "lightningAttention", "lightningAttentionBackward", "lightningStep", "adamw", "siluBackward",
  "addRmsNorm", "rmsNormGate", "splitQkvu", "fusedLinear", "qkvuProjection", "lightningState",
  "decodeLayer", "copyMany", "gluNorm", "productPair",
] as const;
export type LauncherName = (typeof LAUNCHERS)[number];

/**
 * Index errors a kernel records on the device (DeviceError.code is the position here + 1; 0 is
 * none): the op and argument the message names, and whether the op's ignoreIndex is also allowed.
 */
export const INDEX_ERRORS = [
  { op: "gather", argument: "indices", ignorable: false },
  { op: "scatterAdd", argument: "indices", ignorable: false },
  { op: "embedding", argument: "ids", ignorable: false },
  { op: "embeddingBackward", argument: "ids", ignorable: false },
  { op: "softmaxCrossEntropy", argument: "labels", ignorable: true },
  { op: "softmaxCrossEntropyBackward", argument: "labels", ignorable: true },
  // lightningStep's prompt segments: offsets 0 ≤ s[0] ≤ s[1] ≤ … ≤ s[B] ≤ N − B.
  { op: "lightningStep", argument: "segments (nondecreasing offsets)", ignorable: false },
] as const satisfies readonly { op: KernelOpName; argument: string; ignorable: boolean }[];
export type IndexErrorOp = (typeof INDEX_ERRORS)[number]["op"];
