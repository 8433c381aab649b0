/**
 * A read-only ZIP archive on disk, as far as torch.save needs: the central directory (ZIP64
 * included, which PyTorch's writer uses for large files), and byte ranges of stored entries read
 * by offset from an open file handle, so a 14 GB checkpoint is never in memory whole. Deflated
 * entries (a re-zipped checkpoint) are inflated whole; torch itself never compresses.
 */
import { open, type FileHandle } from "node:fs/promises";
import { inflateRawSync } from "node:zlib";

/** A PyTorch file we cannot read or will not trust; the message starts with the file. */
export class TorchFileError extends Error {
  override name = "TorchFileError";
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
  }
}

export interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflate. */
  method: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

const EOCD = 0x06054b50;
const ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EOCD = 0x06064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
const MAX_COMMENT = 0xffff;

const u64 = (v: DataView, at: number) => v.getUint32(at, true) + v.getUint32(at + 4, true) * 2 ** 32;

export class ZipArchive {
  private readonly dataStart = new Map<string, number>();

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly size: number,
    readonly entries: Map<string, ZipEntry>,
  ) {}

  /**
   * Opens `path` and reads its central directory.
   *
   * @example
   * const zip = await ZipArchive.open("pytorch_model.bin");
   * console.log([...zip.entries.keys()]); // ["archive/data.pkl", "archive/byteorder", "archive/data/0", …]
   * await zip.close();
   */
  static async open(path: string): Promise<ZipArchive> {
    const fh = await open(path, "r");
    try {
      const { size } = await fh.stat();
      const entries = await readCentralDirectory(fh, size, path);
      return new ZipArchive(path, fh, size, entries);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  private fail(problem: string): never {
    throw new TorchFileError(this.path, problem);
  }

  /** File offset of the first data byte of `entry` (from its local header). */
  private async dataOffset(entry: ZipEntry): Promise<number> {
    const known = this.dataStart.get(entry.name);
    if (known !== undefined) return known;
    const header = await readAt(this.fh, entry.localHeaderOffset, 30, this.size, this.path, `local header of ${entry.name}`);
    const v = new DataView(header.buffer);
    if (v.getUint32(0, true) !== LOCAL) this.fail(`entry ${entry.name}: no local header at byte ${entry.localHeaderOffset} (damaged archive)`);
    const start = entry.localHeaderOffset + 30 + v.getUint16(26, true) + v.getUint16(28, true);
    if (start + entry.compressedSize > this.size) {
      this.fail(`truncated: entry ${entry.name} needs bytes up to ${start + entry.compressedSize}, the file has ${this.size}`);
    }
    this.dataStart.set(entry.name, start);
    return start;
  }

  /** `length` bytes of the uncompressed entry `name`, from byte `start` of it. */
  async read(name: string, start = 0, length?: number): Promise<Uint8Array> {
    const entry = this.entries.get(name) ?? this.fail(`no entry ${name} in the archive`);
    const n = length ?? entry.size - start;
    if (start < 0 || n < 0 || start + n > entry.size) this.fail(`entry ${name}: bytes [${start}, ${start + n}) are outside its ${entry.size} bytes`);
    const at = await this.dataOffset(entry);
    if (entry.method === 0) return readAt(this.fh, at + start, n, this.size, this.path, name);
    const packed = await readAt(this.fh, at, entry.compressedSize, this.size, this.path, name);
    let whole: Uint8Array;
    try {
      whole = inflateRawSync(packed);
    } catch (err) {
      this.fail(`entry ${name}: deflate data is damaged (${(err as Error).message})`);
    }
    if (whole.length !== entry.size) this.fail(`entry ${name}: inflates to ${whole.length} bytes, the directory says ${entry.size}`);
    return whole.subarray(start, start + n);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

async function readAt(fh: FileHandle, position: number, length: number, size: number, path: string, what: string): Promise<Uint8Array> {
  if (position + length > size) throw new TorchFileError(path, `truncated: ${what} needs bytes up to ${position + length}, the file has ${size}`);
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw new TorchFileError(path, `truncated: file ended at byte ${position + done} while reading ${what}`);
    done += bytesRead;
  }
  return buf;
}

async function readCentralDirectory(fh: FileHandle, size: number, path: string): Promise<Map<string, ZipEntry>> {
  const fail = (problem: string): never => {
    throw new TorchFileError(path, problem);
  };
  // The end record is the last 22 bytes plus a comment of up to 64 KiB: search backwards for it.
  const tailLength = Math.min(size, 22 + MAX_COMMENT);
  const tail = await readAt(fh, size - tailLength, tailLength, size, path, "end of archive");
  const tv = new DataView(tail.buffer);
  let eocd = -1;
  for (let i = tailLength - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === EOCD) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) fail("not a ZIP archive, or truncated: no end-of-central-directory record (torch.save writes a ZIP; an interrupted download loses its end)");
  let count = tv.getUint16(eocd + 10, true);
  let cdSize = tv.getUint32(eocd + 12, true);
  let cdOffset = tv.getUint32(eocd + 16, true);
  if (tv.getUint16(eocd + 4, true) !== 0 || tv.getUint16(eocd + 6, true) !== 0) fail("multi-disk ZIP archives are not supported");

  const locator = size - tailLength + eocd - 20;
  if (locator >= 0 && new DataView((await readAt(fh, locator, 4, size, path, "ZIP64 locator")).buffer).getUint32(0, true) === ZIP64_LOCATOR) {
    const loc = new DataView((await readAt(fh, locator, 20, size, path, "ZIP64 locator")).buffer);
    const at = u64(loc, 8);
    const rec = new DataView((await readAt(fh, at, 56, size, path, "ZIP64 end record")).buffer);
    if (rec.getUint32(0, true) !== ZIP64_EOCD) fail(`ZIP64 end record missing at byte ${at} (damaged or truncated archive)`);
    count = u64(rec, 32);
    cdSize = u64(rec, 40);
    cdOffset = u64(rec, 48);
  }
  if (cdOffset + cdSize > size) fail(`truncated: the central directory should span bytes [${cdOffset}, ${cdOffset + cdSize}), the file has ${size}`);

  const cd = await readAt(fh, cdOffset, cdSize, size, path, "central directory");
  const v = new DataView(cd.buffer);
  const names = new TextDecoder("utf-8");
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || v.getUint32(p, true) !== CENTRAL) fail(`central directory entry ${i} is damaged`);
    const flags = v.getUint16(p + 8, true);
    const method = v.getUint16(p + 10, true);
    let compressedSize = v.getUint32(p + 20, true);
    let entrySize = v.getUint32(p + 24, true);
    const nameLength = v.getUint16(p + 28, true);
    const extraLength = v.getUint16(p + 30, true);
    const commentLength = v.getUint16(p + 32, true);
    let localHeaderOffset = v.getUint32(p + 42, true);
    const name = names.decode(cd.subarray(p + 46, p + 46 + nameLength));
    // ZIP64: each 32-bit field that reads 0xFFFFFFFF is in the 0x0001 extra field, in this order.
    let e = p + 46 + nameLength;
    const extraEnd = e + extraLength;
    while (e + 4 <= extraEnd) {
      const id = v.getUint16(e, true);
      const len = v.getUint16(e + 2, true);
      if (id === 0x0001) {
        let q = e + 4;
        if (entrySize === 0xffffffff) {
          entrySize = u64(v, q);
          q += 8;
        }
        if (compressedSize === 0xffffffff) {
          compressedSize = u64(v, q);
          q += 8;
        }
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = u64(v, q);
      }
      e += 4 + len;
    }
    if (flags & 1) fail(`entry ${name} is encrypted`);
    if (method !== 0 && method !== 8) fail(`entry ${name} uses compression method ${method}; only stored (0) and deflate (8) are read`);
    entries.set(name, { name, method, compressedSize, size: entrySize, localHeaderOffset });
    p = extraEnd + commentLength;
  }
  return entries;
}
