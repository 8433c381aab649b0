/**
 * `response_format: { type: "json_object" }` by constrained decoding: a character-level JSON
 * recogniser whose state is a small immutable value, and a mask over the vocabulary that leaves
 * only the tokens whose text keeps the output a prefix of one JSON object. The sampler never sees
 * a token that would break it, so the answer parses whenever it ends by itself (not by max_tokens).
 */
import type { Sampler } from "@lightning-ts/tnl";
import type { Tokenizer } from "@lightning-ts/tokenizer";

/** Where the recogniser is. `stack` holds the open containers, innermost last: 'o' object, 'a' array. */
interface JsonState {
  readonly mode: Mode;
  readonly stack: string;
  /** Literal: the characters still expected. Unicode escape: hex digits still expected. Whitespace: the run so far. */
  readonly rest: string;
  readonly count: number;
}

type Mode =
  | "start" // before the top-level object
  | "value" // a value is expected
  | "arrayFirst" // after '[': a value or ']'
  | "keyFirst" // after '{': a key or '}'
  | "key" // after ',' in an object: a key
  | "keyString"
  | "keyEscape"
  | "keyUnicode"
  | "colon"
  | "string"
  | "escape"
  | "unicode"
  | "literal"
  | "numSign" // after '-'
  | "numZero" // a leading 0
  | "numInt"
  | "numDot" // after '.'
  | "numFrac"
  | "numE" // after 'e'
  | "numESign"
  | "numExp"
  | "after" // after a value: ',' or a closing bracket
  | "done";

// Runs of whitespace are bounded, or a model could fill max_tokens with spaces and never finish.
const MAX_WHITESPACE = 4;
const WS = " \n\t\r";
const DIGITS = "0123456789";
const HEX = "0123456789abcdefABCDEF";

export const JSON_START: JsonState = { mode: "start", stack: "", rest: "", count: 0 };

const at = (mode: Mode, stack: string, rest = "", count = 0): JsonState => ({ mode, stack, rest, count });

function whitespace(s: JsonState, ch: string): JsonState | null {
  if (!WS.includes(ch) || s.count >= MAX_WHITESPACE) return null;
  return { ...s, count: s.count + 1 };
}

/** The start of a value. */
function value(stack: string, ch: string): JsonState | null {
  if (ch === "{") return at("keyFirst", stack + "o");
  if (ch === "[") return at("arrayFirst", stack + "a");
  if (ch === '"') return at("string", stack);
  if (ch === "-") return at("numSign", stack);
  if (ch === "0") return at("numZero", stack);
  if (DIGITS.includes(ch)) return at("numInt", stack);
  for (const word of ["true", "false", "null"]) if (ch === word[0]) return at("literal", stack, word.slice(1));
  return null;
}

/** After a value, or a closing bracket. */
function after(stack: string, ch: string): JsonState | null {
  if (stack === "") return null; // the object is complete: nothing may follow
  const top = stack[stack.length - 1];
  if (ch === ",") return at(top === "o" ? "key" : "value", stack);
  if ((ch === "}" && top === "o") || (ch === "]" && top === "a")) {
    const outer = stack.slice(0, -1);
    return outer === "" ? at("done", "") : at("after", outer);
  }
  return null;
}

/** Feeds one character; null when it cannot continue a JSON object. */
export function jsonStep(s: JsonState, ch: string): JsonState | null {
  const { stack } = s;
  switch (s.mode) {
    case "start":
      return ch === "{" ? at("keyFirst", "o") : whitespace(s, ch);
    case "value":
      return value(stack, ch) ?? whitespace(s, ch);
    case "arrayFirst":
      return ch === "]" ? after(stack, ch) : (value(stack, ch) ?? whitespace(s, ch));
    case "keyFirst":
      if (ch === "}") return after(stack, ch);
      return ch === '"' ? at("keyString", stack) : whitespace(s, ch);
    case "key":
      return ch === '"' ? at("keyString", stack) : whitespace(s, ch);
    case "keyString":
    case "string": {
      const escape = s.mode === "string" ? "escape" : "keyEscape";
      if (ch === '"') return s.mode === "string" ? at("after", stack) : at("colon", stack);
      if (ch === "\\") return at(escape, stack);
      return ch.charCodeAt(0) < 0x20 ? null : s;
    }
    case "escape":
    case "keyEscape": {
      const inString = s.mode === "escape" ? "string" : "keyString";
      if (ch === "u") return at(s.mode === "escape" ? "unicode" : "keyUnicode", stack, "xxxx");
      return '"\\/bfnrt'.includes(ch) ? at(inString, stack) : null;
    }
    case "unicode":
    case "keyUnicode": {
      if (!HEX.includes(ch)) return null;
      const rest = s.rest.slice(1);
      return rest ? at(s.mode, stack, rest) : at(s.mode === "unicode" ? "string" : "keyString", stack);
    }
    case "colon":
      return ch === ":" ? at("value", stack) : whitespace(s, ch);
    case "literal":
      if (ch !== s.rest[0]) return null;
      return s.rest.length > 1 ? at("literal", stack, s.rest.slice(1)) : at("after", stack);
    case "numSign":
      return ch === "0" ? at("numZero", stack) : DIGITS.includes(ch) ? at("numInt", stack) : null;
    case "numZero":
    case "numInt":
      if (s.mode === "numInt" && DIGITS.includes(ch)) return s;
      if (ch === ".") return at("numDot", stack);
      if (ch === "e" || ch === "E") return at("numE", stack);
      return afterNumber(stack, ch);
    case "numDot":
      return DIGITS.includes(ch) ? at("numFrac", stack) : null;
    case "numFrac":
      if (DIGITS.includes(ch)) return s;
      if (ch === "e" || ch === "E") return at("numE", stack);
      return afterNumber(stack, ch);
    case "numE":
      return ch === "+" || ch === "-" ? at("numESign", stack) : DIGITS.includes(ch) ? at("numExp", stack) : null;
    case "numESign":
      return DIGITS.includes(ch) ? at("numExp", stack) : null;
    case "numExp":
      return DIGITS.includes(ch) ? s : afterNumber(stack, ch);
    case "after":
      return after(stack, ch) ?? whitespace(s, ch);
    case "done":
      return null;
  }
}

/** A number ends at the first character that cannot continue it, which then comes after it. */
function afterNumber(stack: string, ch: string): JsonState | null {
  return jsonStep(at("after", stack), ch);
}

/** Feeds a whole piece of text. */
export function jsonFeed(s: JsonState, text: string): JsonState | null {
  let state: JsonState | null = s;
  for (const ch of text) {
    state = jsonStep(state, ch);
    if (!state) return null;
  }
  return state;
}

/**
 * Each token's text, or null for tokens that cannot appear in JSON output: special tokens (empty
 * text) and pieces of a multi-byte character (not UTF-8 on their own). Computed once per tokenizer.
 */
const textsOf = new WeakMap<Tokenizer, (string | null)[]>();
export function tokenTexts(tokenizer: Tokenizer): (string | null)[] {
  let texts = textsOf.get(tokenizer);
  if (!texts) {
    texts = Array.from({ length: tokenizer.vocabSize }, (_, id) => {
      const text = tokenizer.decode([id], { skipSpecialTokens: true });
      return text && Buffer.from(text, "utf8").equals(Buffer.from(tokenizer.tokenBytes(id))) ? text : null;
    });
    textsOf.set(tokenizer, texts);
  }
  return texts;
}

/**
 * One choice's constraint: `sampler` masks the logits of every token that would break the JSON,
 * `push` follows the tokens chosen and says when the object is complete (the choice then stops).
 * Once complete only `eos` is left, in case the caller goes on.
 *
 * @example
 * const json = new JsonConstraint(tokenizer, eosTokenId);
 * engine.submit({ ..., sampler: json.wrap(sampler), onToken: (t) => json.push(t.token) });
 */
export class JsonConstraint {
  private state: JsonState = JSON_START;
  private readonly texts: (string | null)[];

  constructor(
    tokenizer: Tokenizer,
    private readonly eos: number,
  ) {
    this.texts = tokenTexts(tokenizer);
  }

  get done(): boolean {
    return this.state.mode === "done";
  }

  /** Follows a chosen token; returns true once the object is complete. */
  push(token: number): boolean {
    const text = this.texts[token];
    const next = text === null || text === undefined ? null : jsonFeed(this.state, text);
    if (next) this.state = next;
    return this.done;
  }

  wrap(sampler: Sampler): Sampler {
    return (logits, context) => {
      let any = false;
      for (let id = 0; id < logits.length; id++) {
        const text = this.texts[id];
        const ok = this.done ? id === this.eos : text !== null && text !== undefined && jsonFeed(this.state, text) !== null;
        if (ok) any = true;
        else logits[id] = -Infinity;
      }
      if (!any) return this.eos;
      return sampler(logits, context);
    };
  }
}
