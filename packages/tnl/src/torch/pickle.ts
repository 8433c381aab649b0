/**
 * A pickle reader for torch.save's `data.pkl`, limited to what a state dict needs. It interprets
 * opcodes into plain values and never calls anything: the few globals torch uses to describe a
 * tensor (`_rebuild_tensor_v2`, the typed storages, `OrderedDict`, `torch.Size`) are names in an
 * allow-list with a TypeScript meaning; any other global, any other opcode, and BUILD on anything
 * but an OrderedDict are refused before anything else happens (torch's own `weights_only`
 * unpickler draws the line in the same place).
 *
 * Python values become: None → null, bool, int/float → number, str → string, list → array,
 * tuple → `PyTuple`, dict and OrderedDict → `Map`, a rebuilt tensor → `TensorRef`.
 */
import type { SafetensorsDType } from "@lightning-ts/tensor";
import { TorchFileError } from "./zip.js";

/** A storage named by a persistent id: `data/<key>` in the archive holds `numel` items. */
export interface StorageRef {
  kind: "storage";
  key: string;
  dtype: SafetensorsDType;
  numel: number;
  location: string;
}

/** `_rebuild_tensor_v2(storage, offset, size, stride, …)`: a strided view of a storage, in elements. */
export interface TensorRef {
  kind: "tensor";
  storage: StorageRef;
  offset: number;
  shape: number[];
  stride: number[];
}

export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

export type PyValue = null | boolean | number | string | PyValue[] | PyTuple | Map<PyValue, PyValue> | TensorRef | StorageRef | Global;

/** An allowed global, by what it does here. */
interface Global {
  kind: "global";
  name: string;
  role: "OrderedDict" | "rebuild_tensor" | "rebuild_parameter" | "Size" | "storage";
  dtype?: SafetensorsDType;
}

/** torch's typed storages (`torch.<Name>Storage`) and their stored item types. */
const STORAGES: Record<string, SafetensorsDType> = {
  FloatStorage: "F32",
  DoubleStorage: "F64",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  LongStorage: "I64",
  IntStorage: "I32",
  ShortStorage: "I16",
  CharStorage: "I8",
  ByteStorage: "U8",
  BoolStorage: "BOOL",
};

const GLOBALS: Record<string, Omit<Global, "kind" | "name">> = {
  "collections.OrderedDict": { role: "OrderedDict" },
  "torch._utils._rebuild_tensor_v2": { role: "rebuild_tensor" },
  "torch._utils._rebuild_parameter": { role: "rebuild_parameter" },
  "torch._utils._rebuild_parameter_with_state": { role: "rebuild_parameter" },
  "torch.Size": { role: "Size" },
  ...Object.fromEntries(Object.entries(STORAGES).map(([name, dtype]) => [`torch.${name}`, { role: "storage" as const, dtype }])),
};

/** Every pickle opcode by byte, so a refused one is named. */
const OPCODE_NAMES: Record<number, string> = {
  0x28: "MARK", 0x2e: "STOP", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP", 0x46: "FLOAT", 0x49: "INT", 0x4a: "BININT",
  0x4b: "BININT1", 0x4c: "LONG", 0x4d: "BININT2", 0x4e: "NONE", 0x50: "PERSID", 0x51: "BINPERSID", 0x52: "REDUCE",
  0x53: "STRING", 0x54: "BINSTRING", 0x55: "SHORT_BINSTRING", 0x56: "UNICODE", 0x58: "BINUNICODE", 0x61: "APPEND",
  0x62: "BUILD", 0x63: "GLOBAL", 0x64: "DICT", 0x7d: "EMPTY_DICT", 0x65: "APPENDS", 0x67: "GET", 0x68: "BINGET",
  0x69: "INST", 0x6a: "LONG_BINGET", 0x6c: "LIST", 0x5d: "EMPTY_LIST", 0x6f: "OBJ", 0x70: "PUT", 0x71: "BINPUT",
  0x72: "LONG_BINPUT", 0x73: "SETITEM", 0x74: "TUPLE", 0x29: "EMPTY_TUPLE", 0x75: "SETITEMS", 0x47: "BINFLOAT",
  0x80: "PROTO", 0x81: "NEWOBJ", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x85: "TUPLE1", 0x86: "TUPLE2",
  0x87: "TUPLE3", 0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x8a: "LONG1", 0x8b: "LONG4", 0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES", 0x8c: "SHORT_BINUNICODE", 0x8d: "BINUNICODE8", 0x8e: "BINBYTES8", 0x8f: "EMPTY_SET",
  0x90: "ADDITEMS", 0x91: "FROZENSET", 0x92: "NEWOBJ_EX", 0x93: "STACK_GLOBAL", 0x94: "MEMOIZE", 0x95: "FRAME",
  0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER",
};

const MARK = Symbol("mark");
type Slot = PyValue | typeof MARK;

const isTuple = (x: unknown): x is PyTuple => x instanceof PyTuple;
const isDict = (x: unknown): x is Map<PyValue, PyValue> => x instanceof Map;
const isGlobal = (x: unknown): x is Global => typeof x === "object" && x !== null && (x as Global).kind === "global";

/**
 * Interprets `bytes` (a torch.save `data.pkl`) and returns the pickled value. `file` names the
 * checkpoint in errors. Nothing in the pickle is executed, whatever it holds.
 *
 * @example
 * const stateDict = unpickle(await zip.read("archive/data.pkl"), "pytorch_model.bin") as Map<string, TensorRef>;
 */
export function unpickle(bytes: Uint8Array, file: string): PyValue {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const stack: Slot[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  let pos = 0;

  const fail = (problem: string): never => {
    throw new TorchFileError(file, `data.pkl: ${problem}; nothing in it was executed`);
  };
  const need = (n: number) => {
    if (pos + n > bytes.length) fail(`truncated at byte ${pos} (needs ${n} more)`);
  };
  /** Advances past the next `n` bytes and returns where they start. */
  const take = (n: number) => {
    need(n);
    pos += n;
    return pos - n;
  };
  const u8 = () => bytes[take(1)];
  const u16 = () => view.getUint16(take(2), true);
  const u32 = () => view.getUint32(take(4), true);
  const i32 = () => view.getInt32(take(4), true);
  const text = (n: number) => {
    const start = take(n);
    try {
      return utf8.decode(bytes.subarray(start, start + n));
    } catch {
      return fail(`a string at byte ${start} is not valid UTF-8`);
    }
  };
  const line = () => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail("truncated GLOBAL");
    return text(end - pos + 1).slice(0, -1);
  };
  const pop = (): PyValue => {
    const x = stack.pop();
    if (x === undefined || x === MARK) fail(`stack underflow at byte ${pos - 1}`);
    return x as PyValue;
  };
  const top = (): PyValue => {
    const x = stack[stack.length - 1];
    if (x === undefined || x === MARK) fail(`stack underflow at byte ${pos - 1}`);
    return x as PyValue;
  };
  const popMark = (): PyValue[] => {
    const at = marks.pop();
    if (at === undefined) fail(`no MARK for the opcode at byte ${pos - 1}`);
    return stack.splice(at!) as PyValue[];
  };
  const global = (module: string, name: string): Global => {
    const full = `${module}.${name}`;
    const known = GLOBALS[full];
    if (!known) {
      fail(
        `global ${full} is not allowed (a torch.save state dict needs only tensors, typed storages, OrderedDict and torch.Size); ` +
          "refusing the file",
      );
    }
    return { kind: "global", name: full, ...known };
  };
  const setItems = (dict: PyValue, items: PyValue[]) => {
    if (!isDict(dict)) fail("SETITEM(S) on something that is not a dict");
    for (let i = 0; i + 1 < items.length; i += 2) {
      const key = items[i];
      if (typeof key !== "string" && typeof key !== "number") fail(`a dict key of type ${describe(key)}`);
      (dict as Map<PyValue, PyValue>).set(key, items[i + 1]);
    }
  };
  const get = (i: number) => (memo.has(i) ? memo.get(i)! : fail(`memo entry ${i} read before it was written`));

  for (;;) {
    const at = pos;
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail(`pickle protocol ${bytes[pos - 1]} is newer than any Python writes`);
        break;
      case 0x95: // FRAME: an 8-byte length we need not honour
        take(8);
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length > 0) fail(`STOP with ${stack.length} values on the stack`);
        return pop();
      case 0x28: // MARK
        marks.push(stack.length);
        stack.push(MARK);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(new PyTuple([]));
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x4a: // BININT
        stack.push(i32());
        break;
      case 0x8a: {
        // LONG1: n little-endian two's-complement bytes
        const n = u8();
        const start = take(n);
        let x = 0n;
        for (let i = n - 1; i >= 0; i--) x = (x << 8n) | BigInt(bytes[start + i]);
        if (n > 0 && bytes[start + n - 1] & 0x80) x -= 1n << BigInt(8 * n);
        if (x > BigInt(Number.MAX_SAFE_INTEGER) || x < BigInt(Number.MIN_SAFE_INTEGER)) fail(`integer ${x} is beyond 2^53`);
        stack.push(Number(x));
        break;
      }
      case 0x47: // BINFLOAT: big-endian double
        stack.push(view.getFloat64(take(8), false));
        break;
      case 0x58: // BINUNICODE
        stack.push(text(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(u8()));
        break;
      case 0x85: // TUPLE1
        stack.push(new PyTuple([pop()]));
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push(new PyTuple([pop(), b]));
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push(new PyTuple([pop(), b, c]));
        break;
      }
      case 0x74: // TUPLE
        stack.push(new PyTuple(popMark().slice(1)));
        break;
      case 0x6c: // LIST
        stack.push(popMark().slice(1));
        break;
      case 0x64: {
        // DICT
        const d = new Map<PyValue, PyValue>();
        setItems(d, popMark().slice(1));
        stack.push(d);
        break;
      }
      case 0x61: {
        // APPEND
        const x = pop();
        const list = top();
        if (!Array.isArray(list)) fail("APPEND to something that is not a list");
        (list as PyValue[]).push(x);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark().slice(1);
        const list = top();
        if (!Array.isArray(list)) fail("APPENDS to something that is not a list");
        (list as PyValue[]).push(...items);
        break;
      }
      case 0x73: {
        // SETITEM
        const value = pop();
        const key = pop();
        setItems(top(), [key, value]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark().slice(1);
        setItems(top(), items);
        break;
      }
      case 0x30: // POP
        if (stack[stack.length - 1] === MARK) popMark();
        else pop();
        break;
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
        stack.push(get(u8()));
        break;
      case 0x6a: // LONG_BINGET
        stack.push(get(u32()));
        break;
      case 0x63: {
        // GLOBAL "module\nname\n"
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") fail("STACK_GLOBAL on values that are not strings");
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x51: // BINPERSID
        stack.push(persistentLoad(pop(), fail));
        break;
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop();
        stack.push(reduce(fn, args, fail));
        break;
      }
      case 0x62: {
        // BUILD: only OrderedDict's instance attributes (a state dict's `_metadata`), which we drop.
        const state = pop();
        const obj = top();
        if (!(isDict(obj) && (state === null || isDict(state)))) fail(`BUILD on ${describe(obj)} is not allowed (only on an OrderedDict)`);
        break;
      }
      default:
        fail(`opcode ${OPCODE_NAMES[op] ?? "unknown"} (0x${op.toString(16).padStart(2, "0")}) at byte ${at} is not allowed`);
    }
  }
}

function describe(x: unknown): string {
  if (x === null) return "None";
  if (isGlobal(x)) return x.name;
  if (isTuple(x)) return "a tuple";
  if (Array.isArray(x)) return "a list";
  if (isDict(x)) return "a dict";
  if (typeof x === "object") return `a ${(x as { kind: string }).kind}`;
  return `a ${typeof x}`;
}

/** torch.save's persistent id: `("storage", torch.<T>Storage, key, location, numel)`. */
function persistentLoad(pid: PyValue, fail: (p: string) => never): StorageRef {
  const items = isTuple(pid) ? pid.items : [];
  const [tag, type, key, location, numel] = items;
  if (items.length !== 5 || tag !== "storage") fail(`persistent id ${describe(pid)} is not a torch storage`);
  if (!isGlobal(type) || type.role !== "storage") fail(`persistent id names ${describe(type)}, not a typed storage`);
  if (typeof key !== "string" || typeof location !== "string") fail("persistent id has a non-string key or location");
  if (typeof numel !== "number" || !Number.isSafeInteger(numel) || numel < 0) fail(`storage ${key} has element count ${describe(numel)}`);
  return { kind: "storage", key, dtype: type.dtype!, numel, location };
}

function ints(x: PyValue, what: string, fail: (p: string) => never): number[] {
  const items = isTuple(x) ? x.items : Array.isArray(x) ? x : null;
  if (!items || !items.every((d) => typeof d === "number" && Number.isSafeInteger(d) && d >= 0)) fail(`${what} is not a tuple of non-negative integers`);
  return items as number[];
}

/** Calls an allowed global by its TypeScript meaning. */
function reduce(fn: PyValue, argsValue: PyValue, fail: (p: string) => never): PyValue {
  if (!isGlobal(fn)) fail(`REDUCE of ${describe(fn)}, which is not an allowed callable`);
  if (!isTuple(argsValue)) fail(`REDUCE of ${fn.name} with arguments that are not a tuple`);
  const g = fn;
  const args = argsValue.items;
  switch (g.role) {
    case "OrderedDict": {
      const d = new Map<PyValue, PyValue>();
      if (args.length > 1 || (args.length === 1 && !(Array.isArray(args[0]) && args[0].length === 0))) fail("OrderedDict called with contents");
      return d;
    }
    case "Size":
      return new PyTuple(ints(args[0] ?? null, "torch.Size argument", fail));
    case "rebuild_tensor": {
      const [storage, offset, size, stride, , hooks] = args;
      if (args.length < 6 || args.length > 7) fail(`_rebuild_tensor_v2 with ${args.length} arguments`);
      if (typeof storage !== "object" || storage === null || (storage as StorageRef).kind !== "storage") fail("_rebuild_tensor_v2 without a storage");
      if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) fail("_rebuild_tensor_v2 with a bad storage offset");
      // Backward hooks would be callables; a state dict has an empty OrderedDict (or None) there.
      if (!(hooks === null || (isDict(hooks) && hooks.size === 0))) fail("_rebuild_tensor_v2 with backward hooks");
      const shape = ints(size, "tensor size", fail);
      const strides = ints(stride, "tensor stride", fail);
      if (shape.length !== strides.length) fail(`tensor size has ${shape.length} dims but stride ${strides.length}`);
      return { kind: "tensor", storage: storage as StorageRef, offset, shape, stride: strides };
    }
    case "rebuild_parameter": {
      const data = args[0];
      if (typeof data !== "object" || data === null || (data as TensorRef).kind !== "tensor") fail(`${g.name} of something that is not a tensor`);
      return data;
    }
    case "storage":
      return fail(`REDUCE of ${g.name}: a storage is only read through a persistent id`);
  }
}
