/**
 * `response_format: { type: "json_schema" }` by constrained decoding. A schema (the subset structured
 * outputs use) is compiled into a tree of nodes; a matcher walks that tree one character at a time.
 * Its state is an immutable set of threads (several while `anyOf`, an enum or optional keys leave
 * the choice open), each a lexer position plus a persistent stack of open objects and arrays, so
 * testing a candidate token is feeding its text to the state and keeping the old one.
 *
 * Restrictions that keep the matcher small, all of which only narrow what is written (the output
 * still validates): properties come in the schema's order (optional ones may be skipped), keys and
 * enum/const values are written exactly as JSON.stringify writes them, whitespace runs are bounded,
 * numbers are at most MAX_NUMBER characters, and nothing follows the closed document.
 */
import type { Sampler } from "@lightning-ts/tnl";
import type { Tokenizer } from "@lightning-ts/tokenizer";
import { tokenTexts } from "./json-mode.js";

// ---------------------------------------------------------------------------------------------
// Compiling a schema

export type SchemaNode =
  | { readonly kind: "object"; readonly id: number; readonly props: readonly Prop[] }
  | { readonly kind: "array"; readonly id: number; readonly items: SchemaNode; readonly min: number; readonly max: number }
  | { readonly kind: "string"; readonly id: number }
  | { readonly kind: "number"; readonly id: number; readonly integer: boolean }
  /** enum, const, boolean, null: the exact JSON texts allowed. */
  | { readonly kind: "literals"; readonly id: number; readonly texts: readonly string[] }
  | { readonly kind: "anyOf"; readonly id: number; readonly options: readonly SchemaNode[] };

interface Prop {
  readonly key: string;
  /** The key as written, quotes included. */
  readonly text: string;
  readonly node: SchemaNode;
  readonly required: boolean;
}

type ObjectNode = Extract<SchemaNode, { kind: "object" }>;
type ArrayNode = Extract<SchemaNode, { kind: "array" }>;

/** A schema the matcher cannot honour: `keyword` is the offending keyword, `path` where it is. */
export class SchemaError extends Error {
  constructor(
    readonly keyword: string,
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

/** Keywords that describe and constrain nothing: ignoring them changes no answer. */
const ANNOTATIONS = ["title", "description", "$schema", "$id", "$comment", "default", "examples", "$defs", "definitions"];
const BY_TYPE: Record<string, string[]> = {
  object: ["properties", "required", "additionalProperties"],
  array: ["items", "minItems", "maxItems"],
  string: [],
  number: [],
  integer: [],
  boolean: [],
  null: [],
};

const MAX_DEPTH = 64;
const KNOWN = new Set(["$ref", "anyOf", "enum", "const", "type", ...Object.values(BY_TYPE).flat()]);

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * Compiles a JSON Schema; throws SchemaError naming the first keyword it does not support.
 *
 * @example
 * const root = compileSchema({ type: "object", properties: { n: { type: "integer" } }, required: ["n"] });
 */
export function compileSchema(schema: unknown): SchemaNode {
  let nextId = 0;
  const resolving = new Set<string>();

  const fail = (keyword: string, path: string, why: string): never => {
    throw new SchemaError(keyword, path, `'${keyword}' at ${path}: ${why}`);
  };

  function resolve(ref: string, path: string): unknown {
    const m = /^#\/(\$defs|definitions)\/([^/]+)$/.exec(ref);
    if (!m) return fail("$ref", path, `only references of the form '#/$defs/<name>' are supported, got ${JSON.stringify(ref).slice(0, 80)}`);
    const defs = isObject(schema) ? schema[m[1]] : undefined;
    const name = m[2].replaceAll("~1", "/").replaceAll("~0", "~");
    if (!isObject(defs) || !Object.hasOwn(defs, name)) return fail("$ref", path, `no definition named ${JSON.stringify(name)}`);
    return defs[name];
  }

  let depth = 0;
  function node(s: unknown, path: string): SchemaNode {
    if (depth >= MAX_DEPTH) return fail("schema", path.slice(0, 80), `schemas nested deeper than ${MAX_DEPTH} are not supported`);
    depth++;
    try {
      return nodeAt(s, path);
    } finally {
      depth--;
    }
  }

  function nodeAt(s: unknown, path: string): SchemaNode {
    if (!isObject(s)) return fail("schema", path, "a schema must be an object");
    const keys = Object.keys(s).filter((k) => !ANNOTATIONS.includes(k));
    const only = (allowed: string[]) => {
      for (const k of keys) if (!allowed.includes(k)) fail(k, path, `the keyword is not supported${allowed.length ? ` here (alongside ${allowed.join(", ")})` : ""}`);
    };

    for (const k of keys) if (!KNOWN.has(k)) fail(k, path, "the keyword is not supported");
    if ("$ref" in s) {
      only(["$ref"]);
      const ref = String(s.$ref);
      if (resolving.has(ref)) return fail("$ref", path, `recursive references are not supported (${ref})`);
      resolving.add(ref);
      try {
        return node(resolve(ref, path), ref);
      } finally {
        resolving.delete(ref);
      }
    }
    if ("anyOf" in s) {
      only(["anyOf"]);
      if (!Array.isArray(s.anyOf) || s.anyOf.length === 0) return fail("anyOf", path, "must be a non-empty list of schemas");
      return { kind: "anyOf", id: nextId++, options: s.anyOf.map((o, i) => node(o, `${path}/anyOf/${i}`)) };
    }
    const types: unknown[] = s.type === undefined ? [] : Array.isArray(s.type) ? s.type : [s.type];
    for (const t of types) if (typeof t !== "string" || !Object.hasOwn(BY_TYPE, t)) fail("type", path, `unknown type ${JSON.stringify(t)}`);
    if ("enum" in s || "const" in s) {
      only(["enum", "const", "type"]);
      if ("enum" in s && "const" in s) fail("const", path, "give enum or const, not both");
      const values = "const" in s ? [s.const] : s.enum;
      if (!Array.isArray(values) || values.length === 0) return fail("enum", path, "must be a non-empty list");
      const texts = values.filter((v) => types.length === 0 || types.some((t) => hasType(v, t as string))).map((v) => JSON.stringify(v));
      if (texts.length === 0) return fail("enum" in s ? "enum" : "const", path, "no value has the schema's type");
      return { kind: "literals", id: nextId++, texts: [...new Set(texts)] };
    }
    if (types.length === 0) return fail("type", path, "a schema needs a type (or enum, const, anyOf, $ref)");
    if (types.length > 1) {
      only(["type", ...types.flatMap((t) => BY_TYPE[t as string])]);
      return { kind: "anyOf", id: nextId++, options: types.map((t) => node({ ...s, type: t }, path)) };
    }
    const type = types[0] as string;
    only(["type", ...BY_TYPE[type]]);
    const id = nextId++;
    switch (type) {
      case "string":
        return { kind: "string", id };
      case "number":
      case "integer":
        return { kind: "number", id, integer: type === "integer" };
      case "boolean":
        return { kind: "literals", id, texts: ["true", "false"] };
      case "null":
        return { kind: "literals", id, texts: ["null"] };
      case "array": {
        if (!("items" in s)) return fail("items", path, "an array needs an items schema");
        const count = (k: "minItems" | "maxItems", dflt: number) => {
          const v = s[k] ?? dflt;
          return Number.isSafeInteger(v) && (v as number) >= 0 ? (v as number) : fail(k, path, "must be a non-negative integer");
        };
        const min = count("minItems", 0);
        const max = count("maxItems", Number.MAX_SAFE_INTEGER);
        if (max < min) fail("maxItems", path, "is less than minItems");
        return { kind: "array", id, items: node(s.items, `${path}/items`), min, max };
      }
      default: {
        // Absent additionalProperties is taken as false: only the listed keys are written.
        if (s.additionalProperties !== undefined && s.additionalProperties !== false) fail("additionalProperties", path, "only false is supported");
        const properties = s.properties ?? {};
        if (!isObject(properties)) return fail("properties", path, "must be an object");
        const required = s.required ?? [];
        if (!Array.isArray(required) || !required.every((r) => typeof r === "string" && Object.hasOwn(properties, r))) {
          return fail("required", path, "must list names from properties");
        }
        const props = Object.entries(properties).map(([key, p]) => ({ key, text: JSON.stringify(key), node: node(p, `${path}/properties/${key}`), required: required.includes(key) }));
        return { kind: "object", id, props };
      }
    }
  }
  return node(schema, "#");
}

/**
 * compileSchema, remembered by the schema's text for the last few schemas, so that requests with
 * the same schema share one compiled tree and with it the cache of vocabulary masks.
 */
export function compileSchemaCached(schema: unknown): SchemaNode {
  const text = JSON.stringify(schema) ?? "";
  let root = compiled.get(text);
  if (root) compiled.delete(text);
  else root = compileSchema(schema);
  compiled.set(text, root); // most recently used last
  if (compiled.size > MAX_CACHED_SCHEMAS) compiled.delete(compiled.keys().next().value!);
  return root;
}
const MAX_CACHED_SCHEMAS = 32;
const compiled = new Map<string, SchemaNode>();

function hasType(v: unknown, t: string): boolean {
  switch (t) {
    case "integer":
      return Number.isInteger(v);
    case "number":
      return typeof v === "number";
    case "null":
      return v === null;
    case "array":
      return Array.isArray(v);
    case "object":
      return isObject(v);
    default:
      return typeof v === t;
  }
}

// ---------------------------------------------------------------------------------------------
// The matcher

const MAX_WHITESPACE = 4;
export const MAX_NUMBER = 24;
const WS = " \n\t"; // no \r: it only ever wastes tokens
const DIGITS = "0123456789";
const HEX = "0123456789abcdefABCDEF";

/** The open containers, innermost first. `next`: the index of the next property that may come; `count`: items begun. */
type Frame =
  | { readonly kind: "o"; readonly node: ObjectNode; readonly next: number; readonly parent: Frame | null; readonly key: string }
  | { readonly kind: "a"; readonly node: ArrayNode; readonly count: number; readonly parent: Frame | null; readonly key: string };

type NumPhase = "sign" | "zero" | "int" | "dot" | "frac" | "e" | "esign" | "exp";
type Lex =
  | { readonly m: "value"; readonly node: SchemaNode; readonly ws: number } // a value of `node` is expected
  | { readonly m: "lit"; readonly rest: string; readonly then: Lex } // the rest of a key or an enum value
  | { readonly m: "str"; readonly hex: number } // in a free string: hex = -1 plain, 0 after '\', 1..4 hex digits left
  | { readonly m: "num"; readonly integer: boolean; readonly phase: NumPhase; readonly len: number }
  | { readonly m: "key"; readonly first: boolean; readonly ws: number } // in an object: a key (or '}' when first)
  | { readonly m: "colon"; readonly node: SchemaNode; readonly ws: number }
  | { readonly m: "arrOpen"; readonly ws: number } // after '[': an item or ']'
  | { readonly m: "after"; readonly ws: number }; // a value ended

interface Thread {
  readonly lex: Lex;
  readonly frames: Frame | null;
}

const AFTER: Lex = { m: "after", ws: 0 };
const END_NUMBER: NumPhase[] = ["zero", "int", "frac", "exp"];

function objFrame(node: ObjectNode, next: number, parent: Frame | null): Frame {
  return { kind: "o", node, next, parent, key: `o${node.id}.${next}/${parent?.key ?? ""}` };
}
function arrFrame(node: ArrayNode, count: number, parent: Frame | null): Frame {
  return { kind: "a", node, count, parent, key: `a${node.id}.${Math.min(count, node.max)}/${parent?.key ?? ""}` };
}

function lexKey(l: Lex): string {
  switch (l.m) {
    case "value":
    case "colon":
      return `${l.m}${l.node.id}.${l.ws}`;
    case "lit":
      return `lit${JSON.stringify(l.rest)}>${lexKey(l.then)}`;
    case "str":
      return `str${l.hex}`;
    case "num":
      return `num${l.integer ? "i" : "n"}${l.phase}${l.len}`;
    case "key":
      return `key${l.first ? 1 : 0}.${l.ws}`;
    default:
      return `${l.m}${l.ws}`;
  }
}
const threadKey = (t: Thread): string => `${lexKey(t.lex)}|${t.frames?.key ?? ""}`;

/** Properties i.. that may be written next: up to and including the first required one. */
function nextProps(node: ObjectNode, from: number): number[] {
  const out: number[] = [];
  for (let j = from; j < node.props.length; j++) {
    out.push(j);
    if (node.props[j].required) break;
  }
  return out;
}
const canClose = (node: ObjectNode, from: number) => node.props.slice(from).every((p) => !p.required);

function whitespace(t: Thread, ch: string): Thread[] {
  const lex = t.lex as Extract<Lex, { ws: number }>;
  return WS.includes(ch) && lex.ws < MAX_WHITESPACE ? [{ lex: { ...lex, ws: lex.ws + 1 }, frames: t.frames }] : [];
}

/** The first character of a value of `node`. */
function startValue(node: SchemaNode, frames: Frame | null, ch: string): Thread[] {
  switch (node.kind) {
    case "object":
      return ch === "{" ? [{ lex: { m: "key", first: true, ws: 0 }, frames: objFrame(node, 0, frames) }] : [];
    case "array":
      return ch === "[" ? [{ lex: { m: "arrOpen", ws: 0 }, frames: arrFrame(node, 0, frames) }] : [];
    case "string":
      return ch === '"' ? [{ lex: { m: "str", hex: -1 }, frames }] : [];
    case "number": {
      const phase: NumPhase | null = ch === "-" ? "sign" : ch === "0" ? "zero" : DIGITS.includes(ch) ? "int" : null;
      return phase ? [{ lex: { m: "num", integer: node.integer, phase, len: 1 }, frames }] : [];
    }
    case "literals":
      return node.texts.filter((t) => t[0] === ch).map((t) => ({ lex: t.length > 1 ? { m: "lit", rest: t.slice(1), then: AFTER } : AFTER, frames }));
    case "anyOf":
      return node.options.flatMap((o) => startValue(o, frames, ch));
  }
}

function stepNumber(t: Thread, lex: Extract<Lex, { m: "num" }>, ch: string): Thread[] {
  // A phase that wants a digit next is entered only with room left for that digit (no dead end).
  const go = (phase: NumPhase): Thread[] => {
    const room = END_NUMBER.includes(phase) ? 0 : 1;
    return lex.len + 1 + room <= MAX_NUMBER ? [{ lex: { ...lex, phase, len: lex.len + 1 }, frames: t.frames }] : [];
  };
  const digit = DIGITS.includes(ch);
  const e = ch === "e" || ch === "E";
  switch (lex.phase) {
    case "sign":
      return ch === "0" ? go("zero") : digit ? go("int") : [];
    case "dot":
      return digit ? go("frac") : [];
    case "e":
      return ch === "+" || ch === "-" ? go("esign") : digit ? go("exp") : [];
    case "esign":
      return digit ? go("exp") : [];
    default: {
      if (digit && lex.phase !== "zero") return go(lex.phase);
      if (!lex.integer && ch === "." && lex.phase !== "frac" && lex.phase !== "exp") return go("dot");
      if (!lex.integer && e && lex.phase !== "exp") return go("e");
      // The number ended; the character belongs to what follows it.
      return step({ lex: AFTER, frames: t.frames }, ch);
    }
  }
}

/** Feeds one character to one thread: its successors (none when the character cannot continue). */
function step(t: Thread, ch: string): Thread[] {
  const { lex, frames } = t;
  switch (lex.m) {
    case "value": {
      const out = startValue(lex.node, frames, ch);
      return out.length ? out : whitespace(t, ch);
    }
    case "lit":
      if (ch !== lex.rest[0]) return [];
      return [{ lex: lex.rest.length > 1 ? { m: "lit", rest: lex.rest.slice(1), then: lex.then } : lex.then, frames }];
    case "str":
      if (lex.hex === -1) {
        if (ch === '"') return [{ lex: AFTER, frames }];
        if (ch === "\\") return [{ lex: { m: "str", hex: 0 }, frames }];
        return ch.charCodeAt(0) < 0x20 ? [] : [t];
      }
      if (lex.hex === 0) {
        if (ch === "u") return [{ lex: { m: "str", hex: 4 }, frames }];
        return '"\\/bfnrt'.includes(ch) ? [{ lex: { m: "str", hex: -1 }, frames }] : [];
      }
      return HEX.includes(ch) ? [{ lex: { m: "str", hex: lex.hex === 1 ? -1 : lex.hex - 1 }, frames }] : [];
    case "num":
      return stepNumber(t, lex, ch);
    case "key": {
      const f = frames as Extract<Frame, { kind: "o" }>;
      if (ch === "}" && lex.first && canClose(f.node, f.next)) return [{ lex: AFTER, frames: f.parent }];
      if (ch === '"') {
        return nextProps(f.node, f.next).map((j) => {
          const p = f.node.props[j];
          return { lex: { m: "lit", rest: p.text.slice(1), then: { m: "colon", node: p.node, ws: 0 } }, frames: objFrame(f.node, j + 1, f.parent) };
        });
      }
      return whitespace(t, ch);
    }
    case "colon":
      return ch === ":" ? [{ lex: { m: "value", node: lex.node, ws: 0 }, frames }] : whitespace(t, ch);
    case "arrOpen": {
      const f = frames as Extract<Frame, { kind: "a" }>;
      if (ch === "]" && f.node.min === 0) return [{ lex: AFTER, frames: f.parent }];
      if (f.node.max === 0) return whitespace(t, ch);
      const out = startValue(f.node.items, arrFrame(f.node, 1, f.parent), ch);
      return out.length ? out : whitespace(t, ch);
    }
    case "after": {
      if (!frames) return []; // the document is complete
      if (frames.kind === "o") {
        // A comma only where a key can still follow, so no state is a dead end.
        if (ch === "," && frames.next < frames.node.props.length) return [{ lex: { m: "key", first: false, ws: 0 }, frames }];
        if (ch === "}" && canClose(frames.node, frames.next)) return [{ lex: AFTER, frames: frames.parent }];
      } else {
        if (ch === "," && frames.count < frames.node.max) return [{ lex: { m: "value", node: frames.node.items, ws: 0 }, frames: arrFrame(frames.node, frames.count + 1, frames.parent) }];
        if (ch === "]" && frames.count >= frames.node.min) return [{ lex: AFTER, frames: frames.parent }];
      }
      return whitespace(t, ch);
    }
  }
}

/** A matcher state: the live threads, deduplicated, with a key that names the state. */
export interface MatchState {
  readonly threads: readonly Thread[];
  readonly key: string;
}

function makeState(threads: Thread[]): MatchState {
  const byKey = new Map<string, Thread>();
  for (const t of threads) byKey.set(threadKey(t), t);
  return { threads: [...byKey.values()], key: [...byKey.keys()].sort().join("\n") };
}

export function schemaStart(root: SchemaNode): MatchState {
  return makeState([{ lex: { m: "value", node: root, ws: 0 }, frames: null }]);
}

function feedThreads(threads: readonly Thread[], text: string): readonly Thread[] | null {
  for (const ch of text) {
    const next: Thread[] = [];
    for (const t of threads) next.push(...step(t, ch));
    if (next.length === 0) return null;
    threads = next.length > 1 ? makeState(next).threads : next;
  }
  return threads;
}

/** Feeds text; null when it cannot continue a document of the schema. */
export function schemaFeed(s: MatchState, text: string): MatchState | null {
  const threads = feedThreads(s.threads, text);
  return threads && makeState([...threads]);
}

/** Whether text can continue the document (schemaFeed without building the state's key: the vocabulary scan). */
export function schemaCanFeed(s: MatchState, text: string): boolean {
  return feedThreads(s.threads, text) !== null;
}

/** The text so far is a whole document (an end-of-sequence may come now). */
export function schemaAccepts(s: MatchState): boolean {
  return s.threads.some((t) => t.frames === null && (t.lex.m === "after" || (t.lex.m === "num" && END_NUMBER.includes(t.lex.phase))));
}

/** The text so far is a whole document and no character can follow it: the choice stops. */
export function schemaComplete(s: MatchState): boolean {
  return s.threads.every((t) => t.frames === null && t.lex.m === "after");
}

/**
 * Vocabulary masks (one bit per token) by tokenizer, then by schema and matcher state, least
 * recently used dropped first: 1024 masks of a 64k vocabulary are 8 MB. Inside a free string the
 * state repeats token after token, so most steps find their mask here.
 */
const MAX_CACHED_MASKS = 1024;
const maskCache = new WeakMap<Tokenizer, Map<string, Uint8Array>>();
const rootIds = new WeakMap<SchemaNode, number>();
let nextRootId = 0;

/**
 * One choice's constraint, as JsonConstraint (json-mode.ts) but for a schema.
 *
 * @example
 * const c = new SchemaConstraint(compileSchema(schema), tokenizer, eosTokenId);
 * engine.submit({ ..., sampler: c.wrap(sampler), onToken: (t) => c.push(t.token) });
 */
export class SchemaConstraint {
  private state: MatchState;
  private readonly texts: (string | null)[];
  private readonly masks: Map<string, Uint8Array>;
  private readonly rootId: number;

  constructor(
    root: SchemaNode,
    tokenizer: Tokenizer,
    private readonly eos: number,
  ) {
    this.state = schemaStart(root);
    this.texts = tokenTexts(tokenizer);
    let masks = maskCache.get(tokenizer);
    if (!masks) maskCache.set(tokenizer, (masks = new Map<string, Uint8Array>()));
    this.masks = masks;
    let id = rootIds.get(root);
    if (id === undefined) rootIds.set(root, (id = nextRootId++));
    this.rootId = id;
  }

  get done(): boolean {
    return schemaComplete(this.state);
  }

  /** Follows a chosen token; returns true once the document is complete. */
  push(token: number): boolean {
    const text = this.texts[token];
    const next = text === null || text === undefined ? null : schemaFeed(this.state, text);
    if (next) this.state = next;
    return this.done;
  }

  /** Bit `id` set for each token allowed now. */
  private mask(): Uint8Array {
    const key = `${this.rootId}\n${this.state.key}`;
    let mask = this.masks.get(key);
    if (mask) {
      this.masks.delete(key); // most recently used last
    } else {
      mask = new Uint8Array(Math.ceil(Math.max(this.texts.length, this.eos + 1) / 8));
      for (let id = 0; id < this.texts.length; id++) {
        const text = this.texts[id];
        if (text && schemaCanFeed(this.state, text)) mask[id >> 3] |= 1 << (id & 7);
      }
      if (schemaAccepts(this.state)) mask[this.eos >> 3] |= 1 << (this.eos & 7);
      if (this.masks.size >= MAX_CACHED_MASKS) this.masks.delete(this.masks.keys().next().value!);
    }
    this.masks.set(key, mask);
    return mask;
  }

  wrap(sampler: Sampler): Sampler {
    return (logits, context) => {
      if (this.done) return this.eos;
      const mask = this.mask();
      let any = false;
      for (let id = 0; id < logits.length; id++) {
        if (mask[id >> 3] & (1 << (id & 7))) any = true;
        else logits[id] = -Infinity;
      }
      if (!any) return this.eos;
      return sampler(logits, context);
    };
  }
}
