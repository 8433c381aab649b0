/**
 * Tensor handles and explicit ownership.
 *
 * A tensor is a handle to backend storage, with a shape and a dtype. Handles are reference
 * counted on their storage (a `reshape` shares it), and each must be disposed once: directly with
 * `dispose()`, or by a `scope`, which disposes every tensor created inside it except those it
 * returns or that were `keep`-ed.
 *
 * @example
 * const y = scope(() => {
 *   const x = tensor([1, 2, 3]);
 *   return mul(x, x); // x is disposed when the scope ends, y is returned alive
 * });
 */
import type { Backend } from "./backend.js";
import { byteSize, type DataArray, decode, type DType, storageView } from "./dtype.js";
import { sizeOf } from "./shape.js";

/** Storage shared by one or more tensor handles. */
export interface DataHandle {
  readonly backend: Backend;
  readonly storage: unknown;
  readonly byteLength: number;
  refs: number;
}

let nextId = 1;
const live = new Set<Tensor>();
const scopes: Set<Tensor>[] = [];

export type NestedArray = number | NestedArray[];

export class Tensor {
  readonly id = nextId++;
  readonly size: number;
  #data: DataHandle | null;

  /** Use the op functions (`tensor`, `zeros`, `add` …) to make tensors; this is for backends and the engine. */
  constructor(
    data: DataHandle,
    readonly shape: readonly number[],
    readonly dtype: DType,
  ) {
    this.size = sizeOf(shape);
    this.#data = data;
    data.refs++;
    live.add(this);
    scopes[scopes.length - 1]?.add(this);
  }

  get rank(): number {
    return this.shape.length;
  }

  get backend(): Backend {
    return this.handle.backend;
  }

  get isDisposed(): boolean {
    return this.#data === null;
  }

  /** The storage handle; throws if the tensor was disposed. */
  get handle(): DataHandle {
    if (this.#data === null) {
      throw new Error(`Tensor #${this.id} ${this.describe()} was used after dispose()`);
    }
    return this.#data;
  }

  describe(): string {
    return `${this.dtype}[${this.shape.join(", ")}]`;
  }

  /** Releases this handle; the storage is freed when its last handle goes. Idempotent. */
  dispose(): void {
    const d = this.#data;
    if (d === null) return;
    this.#data = null;
    live.delete(this);
    for (const s of scopes) s.delete(this);
    if (--d.refs === 0) d.backend.free(d.storage);
  }

  /** Raw storage bytes (f16/bf16 as their 16-bit patterns). Waits for pending GPU work. */
  async bytes(): Promise<Uint8Array> {
    const d = this.handle;
    return d.backend.read(d.storage, 0, this.size * byteSize(this.dtype));
  }

  bytesSync(): Uint8Array {
    const d = this.handle;
    if (!d.backend.readSync) throw new Error(`The ${d.backend.name} backend cannot read synchronously: use await data()`);
    return d.backend.readSync(d.storage, 0, this.size * byteSize(this.dtype));
  }

  /** Values as a typed array: Float32Array for float dtypes, Int32Array for i32, Uint8Array for u8. */
  async data(): Promise<DataArray> {
    return toData(this.dtype, await this.bytes());
  }

  dataSync(): DataArray {
    return toData(this.dtype, this.bytesSync());
  }

  /** Values as nested JavaScript arrays (a number for a scalar). */
  async array(): Promise<NestedArray> {
    return nest(Array.from(await this.data()), this.shape);
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item() needs a one-element tensor, got ${this.describe()}`);
    return (await this.data())[0];
  }

  toString(): string {
    return `Tensor(${this.describe()}, ${this.#data ? this.#data.backend.name : "disposed"})`;
  }
}

function toData(dtype: DType, bytes: Uint8Array): DataArray {
  // Backends return a copy (see Backend.read); copy again only if it is not aligned for the view.
  const aligned = bytes.byteOffset % byteSize(dtype) === 0 ? bytes : bytes.slice();
  return decode(dtype, storageView(dtype, aligned.buffer, aligned.byteOffset, bytes.byteLength / byteSize(dtype)));
}

function nest(flat: number[], shape: readonly number[]): NestedArray {
  if (shape.length === 0) return flat[0];
  const [d, ...rest] = shape;
  const step = sizeOf(rest);
  return Array.from({ length: d }, (_, i) => nest(flat.slice(i * step, (i + 1) * step), rest));
}

/** Every tensor found in a nested structure of arrays and plain objects. */
export function collectTensors(value: unknown, out: Tensor[] = []): Tensor[] {
  if (value instanceof Tensor) out.push(value);
  else if (Array.isArray(value)) for (const v of value) collectTensors(v, out);
  else if (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectTensors(v, out);
  }
  return out;
}

/**
 * Runs `fn` and disposes every tensor created inside it, except the tensors in its result (found
 * in nested arrays and plain objects) and those passed to `keep`. Survivors belong to the
 * enclosing scope, if any. Not for async functions: use `beginScope` / `endScope` around awaits.
 */
export function scope<R>(fn: () => R): R {
  const frame = beginScope();
  let result: R;
  try {
    result = fn();
  } catch (err) {
    endScope(frame);
    throw err;
  }
  if (result instanceof Promise) {
    endScope(frame);
    throw new Error("scope(fn): fn returned a Promise; use beginScope()/endScope() around async code");
  }
  endScope(frame, result);
  return result;
}

export interface ScopeFrame {
  readonly tensors: Set<Tensor>;
}

export function beginScope(): ScopeFrame {
  const tensors = new Set<Tensor>();
  scopes.push(tensors);
  return { tensors };
}

/** Ends `frame`, disposing what it tracked except the tensors in `result`. */
export function endScope(frame: ScopeFrame, result?: unknown): void {
  const i = scopes.lastIndexOf(frame.tensors);
  if (i !== scopes.length - 1) throw new Error("endScope: scopes must end in the reverse order they began");
  scopes.pop();
  const survivors = new Set(collectTensors(result));
  for (const t of frame.tensors) if (!survivors.has(t)) t.dispose();
  const parent = scopes[scopes.length - 1];
  if (parent) for (const t of survivors) if (!t.isDisposed) parent.add(t);
}

/** Exempts tensors from disposal by every enclosing scope; the caller owns them. */
export function keep<T>(value: T): T {
  for (const t of collectTensors(value)) for (const s of scopes) s.delete(t);
  return value;
}

/** Number of tensor handles alive now. */
export function liveTensorCount(): number {
  return live.size;
}

/** Tensors alive now, for diagnosing leaks. */
export function liveTensors(): Tensor[] {
  return [...live];
}

/**
 * Runs `fn` and returns the tensors it created that are still alive and not part of its result.
 * A leak check for tests: `expect(await findLeaks(() => work())).toEqual([])`.
 */
export async function findLeaks(fn: () => unknown): Promise<string[]> {
  const before = new Set(live);
  const result = await fn();
  const returned = new Set(collectTensors(result));
  const leaked = [...live].filter((t) => !before.has(t) && !returned.has(t));
  for (const t of returned) t.dispose();
  return leaked.map((t) => `#${t.id} ${t.describe()}`);
}

/**
 * A second handle to `t`'s storage, owned by the caller and exempt from scopes: it keeps the
 * storage alive after `t` is disposed (autograd uses it to save tensors for the backward pass).
 */
export function retain(t: Tensor): Tensor {
  return keep(new Tensor(t.handle, t.shape, t.dtype));
}
