/**
 * A minimal safetensors reader for tests, written independently of the code under test
 * (src/safetensors.ts): the header length, the JSON header, and the data section the byte ranges
 * point into.
 */

/** One tensor's header entry, as the format stores it. */
export interface SafetensorsEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/**
 * @example
 * const { header, data } = safetensorsLayout(await readFile("model.safetensors"));
 * const [begin, end] = header["lm_head.weight"].data_offsets;
 * const bytes = data.subarray(begin, end);
 */
export function safetensorsLayout(file: Uint8Array): { headerBytes: number; header: Record<string, SafetensorsEntry>; data: Uint8Array } {
  const headerBytes = Number(new DataView(file.buffer, file.byteOffset, 8).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + headerBytes))) as Record<string, SafetensorsEntry>;
  return { headerBytes, header, data: file.subarray(8 + headerBytes) };
}
