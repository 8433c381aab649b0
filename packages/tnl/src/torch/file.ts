/**
 * A `torch.save` file (a `pytorch_model.bin`), read safely: the ZIP layout of PyTorch ≥ 1.6
 * (`<archive>/data.pkl`, `<archive>/data/<key>` raw storages, `<archive>/byteorder`,
 * `<archive>/version`), the pickle interpreted by `unpickle` (nothing executed), and each tensor read
 * from its storage entry by offset when asked for. Every tensor's extent is checked against its
 * storage when the file is opened, before any weight is read.
 */
import { open } from "node:fs/promises";
import type { RawTensor, SafetensorsDType } from "@lightning-ts/tensor";
import { type PyValue, type TensorRef, unpickle } from "./pickle.js";
import { TorchFileError, ZipArchive } from "./zip.js";

const ITEM_SIZE: Record<SafetensorsDType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** A tensor of the file: its stored dtype and shape (safetensors names). */
export interface TorchTensorInfo {
  dtype: SafetensorsDType;
  shape: number[];
}

/** The pickle protocol 2 magic number that opens a pre-1.6 (legacy) torch.save file. */
const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

export class TorchCheckpoint {
  private constructor(
    readonly path: string,
    private readonly zip: ZipArchive,
    private readonly prefix: string,
    private readonly refs: Map<string, TensorRef>,
    private readonly bigEndian: boolean,
  ) {}

  /**
   * Opens a torch.save file and reads its pickle; the tensors are listed, not yet read.
   *
   * @example
   * const ckpt = await TorchCheckpoint.open("TransNormerLLM-1B/pytorch_model.bin");
   * const w = await ckpt.readRaw("model.embed_tokens.weight"); // { dtype: "BF16", shape: [64000, 2048], bytes }
   * await ckpt.close();
   */
  static async open(path: string): Promise<TorchCheckpoint> {
    await refuseLegacy(path);
    const zip = await ZipArchive.open(path);
    try {
      const fail = (problem: string): never => {
        throw new TorchFileError(path, problem);
      };
      const pkl = [...zip.entries.keys()].filter((n) => /^[^/]*\/?data\.pkl$/.test(n));
      if (pkl.length !== 1) {
        const torchScript = [...zip.entries.keys()].some((n) => n.endsWith("/constants.pkl"));
        fail(torchScript ? "is a TorchScript archive, not a torch.save state dict" : `is a ZIP without one top-level data.pkl (found ${pkl.length}); not a torch.save file`);
      }
      const prefix = pkl[0].slice(0, -"data.pkl".length);
      const byteorder = zip.entries.has(`${prefix}byteorder`) ? new TextDecoder().decode(await zip.read(`${prefix}byteorder`)) : "little";
      if (byteorder !== "little" && byteorder !== "big") fail(`byteorder record says ${JSON.stringify(byteorder)}`);
      const root = unpickle(await zip.read(pkl[0]), path);
      const refs = stateDict(root, fail);
      const ckpt = new TorchCheckpoint(path, zip, prefix, refs, byteorder === "big");
      for (const [name, ref] of refs) ckpt.check(name, ref);
      return ckpt;
    } catch (err) {
      await zip.close();
      throw err;
    }
  }

  /** Tensor names in file order, with dtype and shape. */
  get tensors(): Map<string, TorchTensorInfo> {
    return new Map([...this.refs].map(([name, r]) => [name, { dtype: r.storage.dtype, shape: [...r.shape] }]));
  }

  /** Tensors that share storage with an earlier one (a tied lm_head saved beside its embedding). */
  sharesStorage(a: string, b: string): boolean {
    return this.refs.get(a)?.storage.key === this.refs.get(b)?.storage.key;
  }

  /** The storage entry must hold exactly numel items, and the view must lie inside it. */
  private check(name: string, r: TensorRef): void {
    const entryName = `${this.prefix}data/${r.storage.key}`;
    const entry = this.zip.entries.get(entryName);
    const where = `tensor "${name}"`;
    if (!entry) throw new TorchFileError(this.path, `${where}: its storage ${entryName} is missing from the archive`);
    const item = ITEM_SIZE[r.storage.dtype];
    if (entry.size !== r.storage.numel * item) {
      throw new TorchFileError(this.path, `${where}: storage ${entryName} holds ${entry.size} bytes, but its pickle says ${r.storage.numel} ${r.storage.dtype} items (${r.storage.numel * item} bytes)`);
    }
    const count = r.shape.reduce((a, b) => a * b, 1);
    if (count === 0) return;
    const last = r.offset + r.shape.reduce((s, d, i) => s + (d - 1) * r.stride[i], 0);
    if (last >= r.storage.numel) {
      throw new TorchFileError(
        this.path,
        `${where}: size [${r.shape.join(", ")}] with stride [${r.stride.join(", ")}] at offset ${r.offset} reaches item ${last}, but its storage holds ${r.storage.numel}`,
      );
    }
  }

  /**
   * The tensor `name` as stored bytes: row-major, little-endian, its own dtype. A non-contiguous
   * view is copied element by element; a contiguous one is one read.
   */
  async readRaw(name: string): Promise<RawTensor> {
    const r = this.refs.get(name);
    if (!r) throw new TorchFileError(this.path, `no tensor named "${name}"`);
    const item = ITEM_SIZE[r.storage.dtype];
    const count = r.shape.reduce((a, b) => a * b, 1);
    const entry = `${this.prefix}data/${r.storage.key}`;
    let bytes: Uint8Array;
    if (count === 0) {
      bytes = new Uint8Array(0);
    } else if (isContiguous(r)) {
      bytes = await this.zip.read(entry, r.offset * item, count * item);
    } else {
      const span = r.shape.reduce((s, d, i) => s + (d - 1) * r.stride[i], 0) + 1;
      const src = await this.zip.read(entry, r.offset * item, span * item);
      bytes = gather(src, r.shape, r.stride, item);
    }
    if (this.bigEndian && item > 1) swapBytes(bytes, item);
    return { dtype: r.storage.dtype, shape: [...r.shape], bytes };
  }

  async close(): Promise<void> {
    await this.zip.close();
  }
}

/** A state dict: a (Ordered)dict of name → tensor. */
function stateDict(root: PyValue, fail: (p: string) => never): Map<string, TensorRef> {
  if (!(root instanceof Map)) fail("does not hold a dict of tensors (a state dict) at the top level");
  const refs = new Map<string, TensorRef>();
  for (const [key, value] of root) {
    if (typeof key !== "string") fail(`state dict key ${describeKey(key)} is not a string`);
    if (typeof value !== "object" || value === null || (value as TensorRef).kind !== "tensor") {
      fail(`state dict entry "${key}" is not a tensor`);
    }
    refs.set(key, value as TensorRef);
  }
  return refs;
}

const describeKey = (key: PyValue) => (typeof key === "number" || typeof key === "boolean" || key === null ? String(key) : "of a non-string type");

async function refuseLegacy(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    const head = new Uint8Array(LEGACY_MAGIC.length);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    if (bytesRead === head.length && LEGACY_MAGIC.every((b, i) => head[i] === b)) {
      throw new TorchFileError(
        path,
        "is in the legacy (pre-1.6, non-ZIP) torch.save format, which is not read; re-save it with a current PyTorch " +
          "(torch.save(torch.load(f, weights_only=True), f)) or convert it to safetensors in Python",
      );
    }
  } finally {
    await fh.close();
  }
}

function isContiguous(r: TensorRef): boolean {
  let expected = 1;
  for (let i = r.shape.length - 1; i >= 0; i--) {
    if (r.shape[i] !== 1 && r.stride[i] !== expected) return false;
    expected *= r.shape[i];
  }
  return true;
}

/** Row-major copy of a strided view; `src` starts at the view's first item. */
function gather(src: Uint8Array, shape: number[], stride: number[], item: number): Uint8Array {
  const count = shape.reduce((a, b) => a * b, 1);
  const out = new Uint8Array(count * item);
  const index = new Array<number>(shape.length).fill(0);
  let from = 0;
  for (let n = 0; n < count; n++) {
    out.set(src.subarray(from * item, (from + 1) * item), n * item);
    // Advance the multi-index like an odometer, keeping `from` = Σ index·stride.
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++index[d] < shape[d]) {
        from += stride[d];
        break;
      }
      from -= (shape[d] - 1) * stride[d];
      index[d] = 0;
    }
  }
  return out;
}

function swapBytes(bytes: Uint8Array, item: number): void {
  for (let i = 0; i < bytes.length; i += item) bytes.subarray(i, i + item).reverse();
}
