/**
 * What every optimizer shares: parameter groups, the step counter, learning-rate schedules,
 * per-parameter state keyed by the parameter's path in its tree, and state save/load.
 *
 * Tensors are immutable, so `step` returns the updated tree. It takes over the old one: every
 * parameter it updates is disposed and replaced; parameters without a gradient (null or absent)
 * and non-tensor leaves are carried over as they are. Gradients stay the caller's.
 *
 * Mixed precision: a bf16 or f16 parameter gets an f32 master copy in its slots (`master/<path>` in
 * saved state), made from the parameter on its first update. Every update runs on the master in
 * f32, with f32 moments, and the parameter becomes the new master rounded once; so updates smaller
 * than half a bf16 step accumulate instead of vanishing. The master is the parameter's true value:
 * a half-precision parameter changed outside `step` is overwritten by the next update.
 */
import { cast, isFloat, keep, reshape, scope, type Tensor } from "@lightning-ts/tensor";
import { flattenTree, type GradTree, isPlainObject } from "../tree.js";
import type { Schedule } from "./schedule.js";

export interface BaseSettings {
  /** A number, or a schedule of the step index (0 for the first update). */
  lr: number | Schedule;
}

/** Settings for the parameters a group matches; unset fields fall back to the optimizer's. */
export type ParamGroup<S extends BaseSettings> = Partial<S> & {
  /** Recorded in saved state. */
  name: string;
  /** Matches parameter paths such as "layers.0.norm.weight"; the first matching group wins. */
  match: RegExp | ((path: string, param: Tensor) => boolean);
};

/** Hyperparameters resolved for one update: the learning rate is a number here. */
export type Resolved<S extends BaseSettings> = Omit<S, "lr"> & { lr: number };

/** Optimizer slots of one parameter (e.g. AdamW's `exp_avg` and `exp_avg_sq`), by slot name. */
export type Slots = Record<string, Tensor>;

/** The half dtypes a parameter may have while the optimizer keeps an f32 master copy of it. */
export type HalfDType = "bf16" | "f16";

/** What `update` returns: the new parameter and slots, and the new parameter rounded to `castTo` when asked and made in the same pass. */
export interface Update {
  param: Tensor;
  slots: Slots;
  /** The new parameter rounded to the `castTo` that `update` was given; without it the optimizer casts `param`. */
  cast?: Tensor;
}

/** The JSON part of saved state. */
export interface OptimizerMeta {
  format: "lightning-ts.optimizer/1";
  optimizer: string;
  /** Updates done so far. */
  step: number;
  /** Numeric settings; a scheduled learning rate is recorded as "schedule". */
  settings: Record<string, unknown>;
  groups: Record<string, unknown>[];
  /** The group of each parameter with state. */
  params: Record<string, string>;
}

export interface OptimizerState {
  /** Slot tensors named `<slot>/<parameter path>`. */
  tensors: Record<string, Tensor>;
  meta: OptimizerMeta;
}

const DEFAULT_GROUP = "default";
/** The slot of the f32 master copy of a half-precision parameter. */
const MASTER = "master";

/** An update that can still be taken back (`Optimizer.tentativeStep`); settle it exactly once. */
export interface TentativeStep<P> {
  /** The updated tree (leaves without a gradient are the caller's, shared with the old tree). */
  readonly params: P;
  /** Keeps the update: frees the previous parameters that were updated and their previous state. */
  commit(): void;
  /** Takes the update back: frees the new parameters and state; returns the old tree. */
  rollback(): P;
}

const isHalf = (t: Tensor) => t.dtype === "bf16" || t.dtype === "f16";

export abstract class Optimizer<S extends BaseSettings> {
  readonly settings: S;
  readonly groups: readonly ParamGroup<S>[];
  #step = 0;
  #slots = new Map<string, Slots>();
  #groupOf = new Map<string, string>();
  /** True while a tentative step is neither committed nor rolled back. */
  #unsettled = false;

  protected constructor(
    readonly name: string,
    settings: S,
    groups: readonly ParamGroup<S>[] = [],
  ) {
    this.settings = settings;
    this.groups = groups;
    const names = new Set([DEFAULT_GROUP]);
    for (const g of groups) {
      if (names.has(g.name)) throw new Error(`${name}: duplicate or reserved group name '${g.name}'`);
      names.add(g.name);
    }
  }

  /** Updates done so far. */
  get stepCount(): number {
    return this.#step;
  }

  /** The group a parameter falls in and its settings. */
  groupOf(path: string, param: Tensor): { name: string; settings: S } {
    for (const g of this.groups) {
      const hit = g.match instanceof RegExp ? g.match.test(path) : g.match(path, param);
      if (hit) {
        const { name, ...overrides } = groupFields(g);
        return { name, settings: { ...this.settings, ...overrides } };
      }
    }
    return { name: DEFAULT_GROUP, settings: this.settings };
  }

  /** The learning rate the next update will use for a group (default: the optimizer's). */
  learningRate(group: string = DEFAULT_GROUP): number {
    const g = this.groups.find((x) => x.name === group);
    const lr = g?.lr ?? this.settings.lr;
    return typeof lr === "number" ? lr : lr(this.#step);
  }

  /**
   * One update of every parameter that has a gradient. Takes over `params` (updated leaves are
   * disposed) and returns the new tree.
   *
   * @example
   * const { value, grads } = valueAndGrad(loss)(params, batch);
   * params = opt.step(params, grads);
   * disposeTree(grads);
   */
  step<P>(params: P, grads: GradTree<P>): P {
    // Each parameter's previous state is freed as soon as its update is enqueued, so the step
    // needs no more memory than one parameter's state on top.
    const done = this.#apply(params, grads, true);
    done.commit();
    return done.params;
  }

  /**
   * The update of `step`, kept undoable until `commit` or `rollback`: the previous parameters and
   * state stay alive (and `params` stays the caller's) until then. This lets a training step
   * enqueue the update before it reads the loss back, so a GPU does not wait for JavaScript between
   * the backward pass and the update, and still take back a step whose loss turns out not finite.
   * Holds one extra copy of the updated parameters and their state until settled.
   *
   * @example
   * const next = opt.tentativeStep(params, grads);
   * if (Number.isFinite((await loss.data())[0])) { next.commit(); params = next.params; }
   * else next.rollback(); // params and the optimizer are as before
   */
  tentativeStep<P>(params: P, grads: GradTree<P>): TentativeStep<P> {
    return this.#apply(params, grads, false);
  }

  #apply<P>(params: P, grads: GradTree<P>, eager: boolean): TentativeStep<P> {
    if (this.#unsettled) throw new Error(`${this.name}: the previous tentative step is neither committed nor rolled back`);
    const gradOf = flattenTree(grads);
    const t = this.#step + 1;
    const work: [string, Tensor, Tensor][] = [];
    const seen = new Set<Tensor>();
    for (const [path, p] of flattenTree(params)) {
      const g = gradOf.get(path);
      if (!g || !isFloat(p.dtype) || seen.has(p)) continue;
      const dtypeOk = g.dtype === p.dtype || (isHalf(p) && g.dtype === "f32");
      if (!dtypeOk || g.shape.join() !== p.shape.join()) {
        throw new Error(`${this.name}: gradient ${g.describe()} at '${path}' does not match parameter ${p.describe()}`);
      }
      const old = this.#slots.get(path);
      if (old) checkSlots(this.name, path, p, old);
      seen.add(p);
      work.push([path, p, g]);
    }
    const updated = new Map<Tensor, Tensor>();
    // What the update replaced, for `rollback`: each path's previous slots (undefined: none) and group.
    const before = new Map<string, { slots: Slots | undefined; group: string | undefined }>();
    for (const [path, p, g] of work) {
      const { name, settings } = this.groupOf(path, p);
      const lr = typeof settings.lr === "number" ? settings.lr : settings.lr(this.#step);
      const hp = { ...settings, lr } as Resolved<S>;
      const old = this.#slots.get(path);
      const next = scope(() => {
        if (!isHalf(p)) return this.update(p, g, old, hp, t);
        const { [MASTER]: master, ...slots } = old ?? {};
        const grad = g.dtype === "f32" || this.takesHalfGradients ? g : cast(g, "f32");
        const r = this.update(master ?? cast(p, "f32"), grad, old && slots, hp, t, p.dtype as HalfDType);
        return { param: r.cast ?? cast(r.param, p.dtype), slots: { ...r.slots, [MASTER]: r.param } };
      });
      keep(next.slots);
      if (eager && old) for (const x of Object.values(old)) x.dispose();
      else before.set(path, { slots: old, group: this.#groupOf.get(path) });
      this.#slots.set(path, next.slots);
      this.#groupOf.set(path, name);
      updated.set(p, next.param);
    }
    const previousStep = this.#step;
    this.#step = t;
    let settled = false;
    this.#unsettled = true;
    const settle = () => {
      if (settled) throw new Error(`${this.name}: a tentative step was already committed or rolled back`);
      settled = true;
      this.#unsettled = false;
    };
    return {
      params: rebuild(params, updated) as P,
      commit: () => {
        settle();
        for (const { slots } of before.values()) if (slots) for (const s of Object.values(slots)) s.dispose();
        for (const p of updated.keys()) p.dispose();
      },
      rollback: () => {
        settle();
        if (eager) throw new Error(`${this.name}: step() cannot be rolled back`);
        for (const [path, { slots, group }] of before) {
          for (const s of Object.values(this.#slots.get(path)!)) s.dispose();
          if (slots) this.#slots.set(path, slots);
          else this.#slots.delete(path);
          if (group === undefined) this.#groupOf.delete(path);
          else this.#groupOf.set(path, group);
        }
        for (const q of updated.values()) q.dispose();
        this.#step = previousStep;
        return params;
      },
    };
  }

  /**
   * The new parameter and slots from the parameter, its gradient (both in the working dtype: f32
   * for the master copy of a half-precision parameter, whose gradient may stay bf16/f16 where
   * `takesHalfGradients`), the slots of the previous step (undefined on the first; without the
   * master copy) and the resolved settings; `t` counts from 1. For the master copy, `castTo` is the
   * parameter's dtype: an optimizer that can round the new parameter to it in the same pass
   * returns that as `cast`.
   */
  protected abstract update(param: Tensor, grad: Tensor, slots: Slots | undefined, hp: Resolved<S>, t: number, castTo?: HalfDType): Update;

  /** Whether `update` takes the gradient of a half-precision parameter as it comes (bf16/f16) instead of cast to f32. */
  protected get takesHalfGradients(): boolean {
    return false;
  }

  /**
   * The step counter, settings and slot tensors. The tensors are new handles (views, no copy) that
   * the caller disposes.
   */
  stateDict(): OptimizerState {
    const tensors: Record<string, Tensor> = {};
    for (const [path, slots] of this.#slots) {
      for (const [slot, t] of Object.entries(slots)) tensors[`${slot}/${path}`] = reshape(t, t.shape);
    }
    return {
      tensors,
      meta: {
        format: "lightning-ts.optimizer/1",
        optimizer: this.name,
        step: this.#step,
        settings: serialisable(this.settings),
        groups: this.groups.map((g) => serialisable(groupFields(g))),
        params: Object.fromEntries(this.#groupOf),
      },
    };
  }

  /**
   * Restores what `stateDict` returned. The tensors are shared, not copied: the caller may dispose
   * theirs. Settings must match this optimizer's (a resumed run must use the same hyperparameters).
   */
  loadStateDict(state: OptimizerState): void {
    const { meta, tensors } = state;
    if (meta.format !== "lightning-ts.optimizer/1") throw new Error(`${this.name}: unknown optimizer state format '${String(meta.format)}'`);
    if (meta.optimizer !== this.name) throw new Error(`${this.name}: cannot load the state of a ${meta.optimizer} optimizer`);
    const mine = stableJson({ settings: serialisable(this.settings), groups: this.groups.map((g) => serialisable(groupFields(g))) });
    const theirs = stableJson({ settings: meta.settings, groups: meta.groups });
    if (mine !== theirs) throw new Error(`${this.name}: saved settings ${theirs} differ from this optimizer's ${mine}`);
    const slots = new Map<string, Slots>();
    for (const [key, t] of Object.entries(tensors)) {
      const cut = key.indexOf("/");
      if (cut < 0) throw new Error(`${this.name}: state tensor name '${key}' is not '<slot>/<path>'`);
      const path = key.slice(cut + 1);
      const entry = slots.get(path) ?? {};
      entry[key.slice(0, cut)] = keep(reshape(t, t.shape));
      slots.set(path, entry);
    }
    this.dispose();
    this.#slots = slots;
    this.#groupOf = new Map(Object.entries(meta.params));
    this.#step = meta.step;
  }

  /** Frees the optimizer's state (it starts from scratch on the next step). */
  dispose(): void {
    for (const slots of this.#slots.values()) for (const t of Object.values(slots)) t.dispose();
    this.#slots.clear();
    this.#groupOf.clear();
    this.#step = 0;
    this.#unsettled = false;
  }
}

function checkSlots(optimizer: string, path: string, p: Tensor, slots: Slots): void {
  for (const [name, s] of Object.entries(slots)) {
    if (s.shape.join() !== p.shape.join()) {
      throw new Error(`${optimizer}: state '${name}/${path}' has shape [${s.shape.join(", ")}], the parameter [${p.shape.join(", ")}]`);
    }
  }
}

/** A group's fields other than `match` (a RegExp or a function, not a setting). */
function groupFields<S extends BaseSettings>(g: ParamGroup<S>): Omit<ParamGroup<S>, "match"> {
  const fields: Partial<ParamGroup<S>> = { ...g };
  delete fields.match;
  return fields as Omit<ParamGroup<S>, "match">;
}

/** Settings as JSON: functions (schedules) become "schedule". */
function serialisable(settings: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(settings).map(([k, v]) => [k, typeof v === "function" ? "schedule" : v]));
}

/** JSON with object keys sorted, so that equal settings compare equal whatever their key order. */
function stableJson(x: unknown): string {
  return JSON.stringify(x, (_key: string, v: unknown) => (isPlainObject(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1))) : v));
}

/** `tree` with the tensors in `replace` swapped; everything else (other tensors, non-tensor leaves) kept. */
function rebuild(tree: unknown, replace: ReadonlyMap<Tensor, Tensor>): unknown {
  if (Array.isArray(tree)) return tree.map((v) => rebuild(v, replace));
  if (isPlainObject(tree)) {
    return Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, rebuild(v, replace)]));
  }
  return replace.get(tree as Tensor) ?? tree;
}
