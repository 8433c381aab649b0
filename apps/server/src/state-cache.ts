/**
 * Memory-bounded LRU maps of recurrent states: the prefix-state cache and the store behind state
 * handles. A TNL state has a fixed size per sequence, so the bound is a byte count, not a token
 * count, and an entry never grows after it is stored.
 */
import { createHash, randomBytes } from "node:crypto";
import { cloneState, disposeState, type TnlState } from "@lightning-ts/tnl";

/** Bytes held by a state's tensors. */
export function stateBytes(s: TnlState): number {
  return s.kv.reduce((sum, t) => sum + t.size * (t.dtype === "f64" ? 8 : 4), 0);
}

interface Entry<V> {
  state: TnlState;
  value: V;
  bytes: number;
}

/**
 * States by key, least recently used evicted first once `maxBytes` is exceeded. Entries own their
 * state: `put` takes ownership, `get` returns a clone the caller owns.
 *
 * @example
 * const cache = new StateLru<void>(64 * 2 ** 20);
 * cache.put("k", state, undefined);
 * const hit = cache.get("k"); // { state: TnlState (a copy), value } or undefined
 */
export class StateLru<V> {
  private readonly map = new Map<string, Entry<V>>();
  bytes = 0;
  hits = 0;
  misses = 0;

  constructor(readonly maxBytes: number) {}

  get size(): number {
    return this.map.size;
  }

  has(key: string): boolean {
    return this.map.has(key);
  }

  get(key: string): { state: TnlState; value: V } | undefined {
    const e = this.map.get(key);
    if (!e) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.map.delete(key); // re-insert: Map order is our recency order
    this.map.set(key, e);
    return { state: cloneState(e.state), value: e.value };
  }

  put(key: string, state: TnlState, value: V): void {
    const bytes = stateBytes(state);
    if (bytes > this.maxBytes) {
      disposeState(state);
      return;
    }
    this.delete(key);
    this.map.set(key, { state, value, bytes });
    this.bytes += bytes;
    for (const [k] of this.map) {
      if (this.bytes <= this.maxBytes) break;
      this.delete(k);
    }
  }

  delete(key: string): void {
    const e = this.map.get(key);
    if (!e) return;
    this.map.delete(key);
    this.bytes -= e.bytes;
    disposeState(e.state);
  }

  clear(): void {
    for (const k of [...this.map.keys()]) this.delete(k);
  }
}

/**
 * Keys of a prompt's prefixes at block boundaries: keys[i] names tokens[0, (i + 1)·block). Each key
 * hashes the previous key with the next block, so a lookup costs one hash per block, and a prefix
 * of tens of thousands of tokens is still a short key.
 *
 * @example
 * prefixKeys([1, 2, 3, 4, 5], 2); // two keys: for [1, 2] and [1, 2, 3, 4]
 */
export function prefixKeys(tokens: readonly number[], block: number): string[] {
  const keys: string[] = [];
  let prev = "";
  for (let end = block; end <= tokens.length; end += block) {
    prev = createHash("sha256").update(prev).update(Int32Array.from(tokens.slice(end - block, end))).digest("hex");
    keys.push(prev);
  }
  return keys;
}

/** A fresh opaque state handle. */
export const newHandle = (): string => `state_${randomBytes(12).toString("hex")}`;
