/**
 * The tape: records, through the engine's op observer, every op that reads a traced tensor, and
 * runs the gradient rules over the records in reverse.
 *
 * Ownership: the tape owns what it retains (the tensors rules save, and the cotangents it
 * accumulates) as handles exempt from scopes, and disposes each as soon as it has been used. A
 * saved tensor is freed right after its rule has run; a cotangent right after the rule that
 * consumes it. What rules create internally is disposed by a scope around each rule.
 *
 * Besides the op records, a tape takes custom nodes (`customOp`): a function of tensors with its
 * own backward, recorded as one node while the ops inside it are not recorded. Collectives are
 * written this way: their backward is another collective, which every rank must join, so such a
 * node runs even where no cotangent reached it (with zeros).
 */
import {
  add,
  addOpObserver,
  addWriteObserver,
  type Backend,
  isFloat,
  keep,
  type OpName,
  type OpRecord,
  retain,
  scope,
  type Tensor,
  type TensorInfo,
  zeros,
} from "@lightning-ts/tensor";
import { type BackwardContext, GRAD_RULES, type GradRule, isNondiff, type Nondiff, type Saves } from "./rules.js";

/** The backward of a custom node: cotangents of its outputs (zeros where none came) → input gradients. */
export type CustomBackward = (cotangents: readonly Tensor[], saved: readonly Tensor[]) => readonly (Tensor | null)[];

interface CustomEntry {
  readonly custom: CustomBackward;
  /** Run even when no cotangent reached the outputs (the backward is a collective). */
  readonly always: boolean;
}

interface Node {
  op: string;
  attrs: unknown;
  entry: GradRule<OpName> | Nondiff | CustomEntry;
  /** Forward tensors, used as keys only: their data may be gone by the time the tape runs. */
  inputs: readonly Tensor[];
  outputs: readonly Tensor[];
  inputInfo: TensorInfo[];
  outputInfo: TensorInfo[];
  /** Where each input lives (kept: the inputs themselves may be gone when the rule runs). */
  inputBackends: Backend[];
  backend: Backend;
  needs: boolean[];
  saved: Map<string, Tensor>;
}

/** Tapes recording now: custom nodes are offered to each. */
const recording = new Set<Tape>();
/** Above 0 while a custom node's forward runs: its inner ops are not recorded. */
let paused = 0;

export interface CustomRecord {
  name: string;
  inputs: readonly Tensor[];
  outputs: readonly Tensor[];
  backward: CustomBackward;
  save: readonly Tensor[];
  always: boolean;
}

/** Runs `forward` without recording its ops, then records `record(outputs)` on every tape that traces an input. */
export function recordCustom(forward: () => Tensor[], record: (outputs: Tensor[]) => CustomRecord): Tensor[] {
  paused++;
  let outputs: Tensor[];
  try {
    outputs = forward();
  } finally {
    paused--;
  }
  if (recording.size > 0 && paused === 0) {
    const r = record(outputs);
    for (const tape of recording) tape.recordCustom(r);
  }
  return outputs;
}

/** Called during `backward` as soon as a watched tensor's gradient is final (null: it got none). */
export type LeafGradHook = (leaf: Tensor, grad: Tensor | null) => void;

const info = (t: Tensor): TensorInfo => ({ shape: [...t.shape], dtype: t.dtype });

export class Tape {
  readonly #nodes: Node[] = [];
  readonly #traced = new Set<Tensor>();
  readonly #watched = new Set<Tensor>();
  #unobserve: (() => void) | null;
  #unobserveWrites: (() => void) | null;

  constructor() {
    this.#unobserve = addOpObserver((r) => this.#record(r));
    this.#unobserveWrites = addWriteObserver((op, reads, target) => {
      if (paused === 0) this.#refuseWrite(op, "", reads, [target]);
    });
    recording.add(this);
  }

  /** Differentiates with respect to `t` (float tensors only; integer tensors are ignored). */
  watch(t: Tensor): void {
    if (isFloat(t.dtype)) {
      this.#traced.add(t);
      this.#watched.add(t);
    }
  }

  /** Stops recording; the records stay until `backward` or `dispose`. */
  stop(): void {
    this.#unobserve?.();
    this.#unobserve = null;
    this.#unobserveWrites?.();
    this.#unobserveWrites = null;
    recording.delete(this);
  }

  /** Records a custom node if it reads a traced tensor (see `recordCustom`). */
  recordCustom(r: CustomRecord): void {
    if (!r.inputs.some((t) => this.#traced.has(t))) return;
    const saved = new Map<string, Tensor>();
    r.save.forEach((t, i) => saved.set(`s${i}`, retain(t)));
    this.#nodes.push({
      op: r.name,
      attrs: null,
      entry: { custom: r.backward, always: r.always },
      inputs: r.inputs,
      outputs: r.outputs,
      inputInfo: r.inputs.map(info),
      outputInfo: r.outputs.map(info),
      inputBackends: r.inputs.map((t) => t.backend),
      backend: r.outputs[0]?.backend ?? r.inputs[0].backend,
      needs: r.inputs.map((t) => this.#traced.has(t) && isFloat(t.dtype)),
      saved,
    });
    for (const t of r.outputs) if (isFloat(t.dtype)) this.#traced.add(t);
  }

  #record(r: OpRecord): void {
    if (paused > 0) return;
    if (r.inPlace) this.#refuseInPlace(r);
    if (!r.inputs.some((t) => this.#traced.has(t))) return;
    const entry = GRAD_RULES[r.op];
    if (isNondiff(entry) && entry.constant) return;
    const needs = r.inputs.map((t) => this.#traced.has(t) && isFloat(t.dtype));
    const saves: Saves = isNondiff(entry) || !entry.saves ? {} : typeof entry.saves === "function" ? entry.saves(needs) : entry.saves;
    const saved = new Map<string, Tensor>();
    for (const i of saves.inputs ?? []) if (r.inputs[i]) saved.set(`x${i}`, retain(r.inputs[i]));
    for (const i of saves.outputs ?? []) if (r.outputs[i]) saved.set(`y${i}`, retain(r.outputs[i]));
    this.#nodes.push({
      op: r.op,
      attrs: r.attrs,
      entry,
      inputs: r.inputs,
      outputs: r.outputs,
      inputInfo: r.inputs.map(info),
      outputInfo: r.outputs.map(info),
      inputBackends: r.inputs.map((t) => t.backend),
      backend: r.outputs[0]?.backend ?? r.inputs[0].backend,
      needs,
      saved,
    });
    for (const t of r.outputs) if (isFloat(t.dtype)) this.#traced.add(t);
  }

  /**
   * An op that wrote over existing storage has no gradient rule, and may have overwritten values
   * a recorded rule still needs: refused whenever it touches what this tape differentiates or keeps.
   */
  #refuseInPlace(r: OpRecord): void {
    this.#refuseWrite(r.op, " with inPlace", r.inputs, r.outputs);
  }

  /** Throws if a write outside the tape's records reads a traced tensor or overwrites one the tape holds. */
  #refuseWrite(op: string, how: string, reads: readonly Tensor[], targets: readonly Tensor[]): void {
    const why = `${op}${how} is not differentiable`;
    if (reads.some((t) => this.#traced.has(t))) {
      throw new Error(`${why}: it reads a tensor that a gradient tape traces; ${how ? "run it out of place (inPlace: false)" : "use ops"} inside grad/valueAndGrad`);
    }
    const held = new Set<unknown>();
    for (const t of this.#traced) if (!t.isDisposed) held.add(t.handle.storage);
    for (const node of this.#nodes) for (const t of node.saved.values()) if (!t.isDisposed) held.add(t.handle.storage);
    if (targets.some((t) => held.has(t.handle.storage))) {
      throw new Error(`${why}: it writes over a tensor that a gradient tape traces or saved for the backward pass, so that gradient would be wrong`);
    }
  }

  /**
   * Propagates `seeds` (cotangents of outputs, which the tape takes over; repeated outputs add up) back through the
   * records and returns the accumulated cotangents of the watched tensors, owned by the caller
   * and exempt from scopes. Call once; the records are consumed.
   */
  backward(seeds: Iterable<readonly [Tensor, Tensor]>, onLeafGrad?: LeafGradHook): Map<Tensor, Tensor> {
    this.stop();
    const ct = new Map<Tensor, Tensor>();
    // Uses of each watched tensor still to run: its gradient is final when they are done.
    const pending = new Map<Tensor, number>();
    if (onLeafGrad) {
      for (const t of this.#watched) pending.set(t, 0);
      for (const node of this.#nodes) node.inputs.forEach((t, i) => node.needs[i] && pending.has(t) && pending.set(t, pending.get(t)! + 1));
    }
    const unused = [...pending].filter(([, n]) => n === 0).map(([t]) => t);
    try {
      for (const [t, g] of seeds) accumulate(ct, t, keep(g));
      while (this.#nodes.length > 0) {
        const node = this.#nodes.pop()!;
        try {
          this.#run(node, ct);
        } finally {
          release(node);
        }
        if (onLeafGrad) {
          node.inputs.forEach((t, i) => {
            if (!node.needs[i] || !pending.has(t)) return;
            const left = pending.get(t)! - 1;
            pending.set(t, left);
            if (left === 0) onLeafGrad(t, ct.get(t) ?? null);
          });
        }
      }
      // Watched tensors no recorded op used: their gradient is final now (a seed, or none).
      for (const t of unused) onLeafGrad!(t, ct.get(t) ?? null);
    } catch (err) {
      for (const g of ct.values()) g.dispose();
      throw err;
    }
    return ct;
  }

  #run(node: Node, ct: Map<Tensor, Tensor>): void {
    const incoming = node.outputs.map((o) => ct.get(o) ?? null);
    const always = "custom" in node.entry && node.entry.always;
    if (incoming.every((g) => g === null) && !always) return;
    for (const o of node.outputs) ct.delete(o);
    const gs = incoming.map(
      (g, i) => g ?? keep(zeros(node.outputInfo[i].shape, { dtype: node.outputInfo[i].dtype, backend: node.backend })),
    );
    try {
      const { entry } = node;
      if (!("custom" in entry) && isNondiff(entry)) throw new Error(`autograd: ${node.op} has no gradient: ${entry.nondiff}`);
      const grads = scope(() => {
        const out = "custom" in entry ? entry.custom(gs, [...node.saved.values()]) : entry.backward(gs, context(node));
        // Fresh handles, exempt from scopes, so the scope may free the rule's own handles.
        return keep(node.inputs.map((_, i) => (node.needs[i] && out[i] ? retain(checked(node, i, out[i])) : null)));
      });
      grads.forEach((g, i) => g && accumulate(ct, node.inputs[i], g));
    } finally {
      for (const g of gs) g.dispose();
    }
  }

  /** Releases everything the tape still holds (after an error, or when a vjp is never called). */
  dispose(): void {
    this.stop();
    for (const node of this.#nodes) release(node);
    this.#nodes.length = 0;
  }
}

function release(node: Node): void {
  for (const t of node.saved.values()) t.dispose();
  node.saved.clear();
}

function accumulate(ct: Map<Tensor, Tensor>, key: Tensor, g: Tensor): void {
  const prev = ct.get(key);
  if (!prev) {
    ct.set(key, g);
    return;
  }
  ct.set(key, keep(add(prev, g)));
  prev.dispose();
  g.dispose();
}

function context(node: Node): BackwardContext<OpName> {
  const get = (key: string, what: string) => {
    const t = node.saved.get(key);
    if (!t) throw new Error(`autograd: the ${node.op} rule reads ${what} but does not list it in 'saves'`);
    return t;
  };
  return {
    op: node.op as OpName,
    attrs: node.attrs as never,
    inputs: node.inputInfo,
    outputs: node.outputInfo,
    backends: node.inputBackends,
    needs: node.needs,
    x: (i) => get(`x${i}`, `input ${i}`),
    y: (i) => get(`y${i}`, `output ${i}`),
  };
}

/** A rule's gradient must match its input exactly; a mismatch is a bug in the rule, named here. */
function checked(node: Node, i: number, g: Tensor): Tensor {
  const want = node.inputInfo[i];
  if (g.dtype !== want.dtype || g.rank !== want.shape.length || g.shape.some((d, j) => d !== want.shape[j])) {
    throw new Error(`autograd: the ${node.op} rule returned ${g.describe()} for input ${i}, expected ${want.dtype}[${want.shape.join(", ")}]`);
  }
  return g;
}
