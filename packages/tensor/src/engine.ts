/**
 * Op dispatch: validate with the op's spec, allocate outputs on the inputs' backend, run the
 * backend's kernel (or, for a composite op the backend has no kernel for, its decomposition into
 * primitives on the same backend), wrap the outputs as tensors and tell observers (autograd
 * records here).
 */
import { DECOMPOSITIONS } from "./api/decompositions.js";
import { ALIASED_OUTPUTS, type Backend, isUnsupported, type Kernel, type TensorRef } from "./backend.js";
import { byteSize } from "./dtype.js";
import { argError, fmtShape, UnsupportedOpError } from "./errors.js";
import { COMPOSITE_OPS, type CompositeOpName, type KernelOpName, type OpAttrs, type OpName } from "./ops/attrs.js";
import { inputNames, OP_SPECS, type TensorInfo } from "./ops/specs.js";
import { scope, Tensor } from "./tensor.js";

let current: Backend | null = null;
let defaultFactory: (() => Backend) | null = null;

/** Installs the factory used when no backend was set (the CPU backend registers itself). */
export function setDefaultBackendFactory(factory: () => Backend): void {
  defaultFactory = factory;
}

/** Makes `backend` the one new tensors are created on. */
export function setBackend(backend: Backend): void {
  current = backend;
}

export function getBackend(): Backend {
  if (current === null) {
    if (defaultFactory === null) throw new Error("No backend set: call setBackend(createCpuBackend())");
    current = defaultFactory();
  }
  return current;
}

const backendIds = new WeakMap<Backend, number>();
let backendCount = 0;

/** "the cpu backend #2": instances are numbered so two backends of one kind can be told apart. */
function backendLabel(b: Backend): string {
  let id = backendIds.get(b);
  if (id === undefined) backendIds.set(b, (id = ++backendCount));
  return `the ${b.name} backend #${id}`;
}

export interface OpRecord<K extends OpName = OpName> {
  op: K;
  inputs: readonly Tensor[];
  attrs: OpAttrs[K];
  outputs: readonly Tensor[];
  /** True when some output was written over an existing tensor's storage (`RunOpOptions.into`). */
  inPlace?: boolean;
}

export type OpObserver = (record: OpRecord) => void;
const observers: OpObserver[] = [];
/** Above 0 while a decomposition runs: observers see the composite op, not the primitives inside. */
let decomposing = 0;

/** Calls `fn` after every op, until the returned function is called. */
export function addOpObserver(fn: OpObserver): () => void {
  observers.push(fn);
  return () => {
    const i = observers.indexOf(fn);
    if (i >= 0) observers.splice(i, 1);
  };
}

/**
 * Told before a write outside the op set (`copyInto`) lands in `target`'s storage, with the tensors
 * it reads: a gradient tape refuses writes it could not differentiate.
 */
export type WriteObserver = (op: string, reads: readonly Tensor[], target: Tensor) => void;
const writeObservers: WriteObserver[] = [];

/** Calls `fn` before every write outside the op set, until the returned function is called. */
export function addWriteObserver(fn: WriteObserver): () => void {
  writeObservers.push(fn);
  return () => {
    const i = writeObservers.indexOf(fn);
    if (i >= 0) writeObservers.splice(i, 1);
  };
}

/** Tells the write observers (which may throw to refuse the write) before `op` writes `target`. */
export function notifyWrite(op: string, reads: readonly Tensor[], target: Tensor): void {
  for (const fn of [...writeObservers]) fn(op, reads, target);
}

export interface RunOpOptions {
  /**
   * Where to write the outputs: `into[i]`, when given, is a live tensor of output i's shape and
   * dtype on the op's backend, and output i is written over its storage instead of new storage.
   * The returned output i is a new handle to that storage. An output may be placed over an
   * input's storage only where the op allows it (`ALIASED_OUTPUTS`). A composite op that the
   * backend runs as its decomposition takes `into` as well (see `decompose`).
   */
  into?: readonly (Tensor | null | undefined)[];
}

/**
 * Runs an op. `backend` is needed only for ops without inputs (creation ops).
 *
 * @example
 * // The new state of a decode step written over the old one (what lightningStep's inPlace does):
 * const [output, next] = runOp("lightningStep", [q, k, v, slopes, state], {}, undefined, { into: [undefined, state] });
 * // next.handle === state.handle
 */
export function runOp<K extends OpName>(op: K, inputs: readonly Tensor[], attrs: OpAttrs[K], backend?: Backend, options?: RunOpOptions): Tensor[] {
  const spec = OP_SPECS[op];
  const names = inputNames(spec, attrs);
  const variadic = names.length === 1 && names[0].endsWith("...");
  inputs.forEach((t, i) => {
    const name = variadic ? `${names[0].slice(0, -3)}[${i}]` : (names[i] ?? `input ${i}`);
    if (!(t instanceof Tensor)) argError(op, name, "a Tensor", t === null ? "null" : typeof t);
    if (t.isDisposed) argError(op, name, "a live tensor", `tensor #${t.id} that was disposed`);
  });
  const be = backend ?? inputs[0]?.backend ?? getBackend();
  inputs.forEach((t, i) => {
    if (t.backend !== be) {
      argError(op, variadic ? `xs[${i}]` : (names[i] ?? `input ${i}`), `a tensor on ${backendLabel(be)} (as the first input)`, `one on ${backendLabel(t.backend)}`);
    }
  });
  const infos = spec.infer(
    inputs.map((t) => ({ shape: [...t.shape], dtype: t.dtype })),
    attrs,
  );
  const opName: OpName = op; // narrows to a KernelOpName below, where the generic K does not
  const target = opName === "copyTo" ? ((attrs as OpAttrs["copyTo"]).backend as Backend) : be;
  for (const info of infos) {
    if (!target.capabilities.dtypes.includes(info.dtype)) {
      throw new UnsupportedOpError(op, target.name, `dtype ${info.dtype} is not available (it has ${target.capabilities.dtypes.join(", ")})`);
    }
  }

  const into = placements(op, options, inputs, names, infos, be);

  let outputs: Tensor[];
  if (into.length > 0 && (opName === "reshape" || opName === "copyTo")) {
    throw new UnsupportedOpError(op, be.name, "cannot write its outputs in place (options.into): its output is a handle, not computed");
  }
  if (opName === "reshape") {
    outputs = [new Tensor(inputs[0].handle, infos[0].shape, infos[0].dtype)];
  } else if (opName === "copyTo") {
    outputs = [transfer(inputs[0], target)];
  } else {
    const kernel = be.kernels[opName];
    if (kernel === undefined) return decompose(op as CompositeOpName, inputs, attrs as never, infos, be, into);
    if (isUnsupported(kernel)) throw new UnsupportedOpError(op, be.name, kernel.unsupported);
    outputs = infos.map((info, i) => {
      const target = into[i];
      if (target) return new Tensor(target.handle, info.shape, info.dtype);
      const byteLength = info.shape.reduce((a, b) => a * b, 1) * byteSize(info.dtype);
      const storage: unknown = be.allocate(byteLength);
      const t = new Tensor({ backend: be, storage, byteLength, refs: 0 }, info.shape, info.dtype);
      return t;
    });
    const ref = (t: Tensor): TensorRef<unknown> => ({ storage: t.handle.storage, shape: t.shape, dtype: t.dtype, size: t.size });
    try {
      (kernel as Kernel<KernelOpName, unknown>)({ inputs: inputs.map(ref), outputs: outputs.map(ref), attrs: attrs as OpAttrs[KernelOpName] });
    } catch (err) {
      for (const t of outputs) t.dispose();
      throw err;
    }
  }
  notify(into.some((t) => t) ? { op, inputs, attrs, outputs, inPlace: true } : { op, inputs, attrs, outputs });
  return outputs;
}

/** The checked `options.into` of runOp: the target of each output, or undefined for new storage. */
function placements(op: OpName, options: RunOpOptions | undefined, inputs: readonly Tensor[], names: readonly string[], infos: readonly TensorInfo[], be: Backend): (Tensor | undefined)[] {
  if (options === undefined) return [];
  if (options === null || typeof options !== "object") argError(op, "options", "an object { into?: (Tensor | undefined)[] }", String(options));
  const into = options.into;
  if (into === undefined) return [];
  if (!Array.isArray(into)) argError(op, "options.into", "an array with a tensor (or undefined) per output", typeof into);
  if (into.length > infos.length) argError(op, "options.into", `at most ${infos.length} entries (one per output)`, `${into.length}`);
  const allowed = ALIASED_OUTPUTS[op as KernelOpName] ?? [];
  const targets: (Tensor | undefined)[] = [];
  into.forEach((t: unknown, i) => {
    const arg = `options.into[${i}]`;
    if (t === undefined || t === null) {
      targets.push(undefined);
      return;
    }
    if (!(t instanceof Tensor)) argError(op, arg, "a Tensor or undefined", typeof t);
    if (t.isDisposed) argError(op, arg, "a live tensor", `tensor #${t.id} that was disposed`);
    if (t.backend !== be) argError(op, arg, `a tensor on ${backendLabel(be)} (as the inputs)`, `one on ${backendLabel(t.backend)}`);
    const want = infos[i];
    if (t.dtype !== want.dtype || fmtShape(t.shape) !== fmtShape(want.shape)) {
      argError(op, arg, `a ${want.dtype}${fmtShape(want.shape)} tensor (output ${i})`, t.describe());
    }
    const other = targets.findIndex((u) => u?.handle.storage === t.handle.storage);
    if (other >= 0) argError(op, arg, "storage of its own", `the storage of options.into[${other}]`);
    inputs.forEach((x, j) => {
      if (x.handle.storage !== t.handle.storage || allowed.some(([o, inp]) => o === i && inp === j)) return;
      argError(op, arg, `storage that is not an input's (${op} cannot write output ${i} over input ${j})`, `the storage of ${names[j] ?? `input ${j}`}`);
    });
    targets.push(t);
  });
  return targets;
}

/** `copyTo`: x's bytes into new storage on `target` (a view when x is there already). */
function transfer(x: Tensor, target: Backend): Tensor {
  const source = x.backend;
  if (target === source) return new Tensor(x.handle, x.shape, x.dtype);
  const byteLength = x.size * byteSize(x.dtype);
  const storage: unknown = target.allocate(byteLength);
  try {
    if (!target.copyFrom?.(storage, source, x.handle.storage, byteLength)) {
      if (!source.readSync) {
        throw new UnsupportedOpError(
          "copyTo",
          target.name,
          `${backendLabel(target)} cannot copy from ${backendLabel(source)} directly (no copyFrom for it) and the source cannot read synchronously; read the tensor (await x.data()) and create it on the destination`,
        );
      }
      if (byteLength > 0) target.write(storage, source.readSync(x.handle.storage, 0, byteLength), 0);
    }
  } catch (err) {
    target.free(storage);
    throw err;
  }
  return new Tensor({ backend: target, storage, byteLength, refs: 0 }, x.shape, x.dtype);
}

function notify(record: OpRecord): void {
  if (observers.length === 0 || decomposing > 0) return;
  for (const fn of [...observers]) fn(record);
}

/**
 * Runs a composite op from primitives on `be`, for a backend without a kernel for it. The targets
 * of `into` go to the decomposition, which may write its outputs there itself (decodeLayer's
 * lightningStep writes the new state in place, as the decode step did before the op); an output it
 * leaves in storage of its own is copied over its target once the whole decomposition has run, so
 * no part of it reads an input that was already overwritten.
 */
function decompose<K extends CompositeOpName>(
  op: K,
  inputs: readonly Tensor[],
  attrs: OpAttrs[K],
  infos: TensorInfo[],
  be: Backend,
  into: readonly (Tensor | undefined)[],
): Tensor[] {
  if (!(COMPOSITE_OPS as readonly string[]).includes(op)) throw new UnsupportedOpError(op, be.name, "its kernel table has no entry for it");
  decomposing++;
  let outputs: Tensor[];
  try {
    outputs = scope(() => DECOMPOSITIONS[op](inputs, attrs, into));
  } finally {
    decomposing--;
  }
  // The decomposition must honour the op's spec, and give outputs of their own (autograd keys on them).
  const bad = infos.findIndex((want, i) => {
    const t = outputs[i];
    return !t || t.dtype !== want.dtype || fmtShape(t.shape) !== fmtShape(want.shape) || inputs.includes(t);
  });
  if (bad >= 0) {
    for (const t of outputs) if (!inputs.includes(t)) t.dispose();
    const want = infos[bad];
    throw new Error(`the decomposition of ${op} returned ${outputs[bad]?.describe() ?? "nothing"} as output ${bad}, expected a new ${want.dtype}${fmtShape(want.shape)}`);
  }
  if (into.some((t) => t)) {
    const placed = [...outputs];
    decomposing++;
    try {
      outputs.forEach((t, i) => {
        const target = into[i];
        if (target && t.handle.storage !== target.handle.storage) placed[i] = runOp("copy", [t], {}, be, { into: [target] })[0];
      });
    } catch (err) {
      for (const t of [...outputs, ...placed]) t.dispose();
      throw err;
    } finally {
      decomposing--;
    }
    for (const t of outputs) if (!placed.includes(t)) t.dispose();
    outputs = placed;
  }
  notify(into.some((t) => t) ? { op, inputs, attrs, outputs, inPlace: true } : { op, inputs, attrs, outputs });
  return outputs;
}

/** Runs a single-output op. */
export function run1<K extends OpName>(op: K, inputs: readonly Tensor[], attrs: OpAttrs[K], backend?: Backend): Tensor {
  return runOp(op, inputs, attrs, backend)[0];
}
