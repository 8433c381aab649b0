/**
 * A TNL checkpoint from bytes in memory (files the user picked, or a fetched URL): config.json's
 * text and one model.safetensors. The page computes in f32 whatever the stored float type, so its
 * greedy tokens are those of the f32 model on any backend.
 */
import { type Backend, cast, decodeSafetensors, loadSafetensors, type Tensor } from "@lightning-ts/tensor";
import { configFromHf, parameterSpecs, type TnlConfig, type TnlModel, type TnlParams } from "@lightning-ts/tnl";

/** A file the page cannot use; the message names the file, what was expected and what came. */
export class PageInputError extends Error {
  override name = "PageInputError";
}

/** The config of config.json's text. */
export function parseConfig(text: string, file = "config.json"): TnlConfig {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new PageInputError(`${file}: expected JSON, got text that does not parse (${(err as Error).message})`);
  }
  try {
    return configFromHf(json, { source: file });
  } catch (err) {
    throw new PageInputError(`${file}: ${(err as Error).message}`);
  }
}

const FLOATS = new Set(["F32", "F16", "BF16", "F64"]);

/**
 * Checks names, shapes and float types in the file's header against the config before any
 * weight is read (the checks of the Node loader, which reads from disk and so is not used here).
 */
function checkWeights(config: TnlConfig, weights: Uint8Array, file: string): void {
  let entries;
  try {
    entries = decodeSafetensors(weights, { names: [], source: file }).header.entries;
  } catch (err) {
    throw new PageInputError(`${file}: expected a safetensors file, got one that does not parse (${(err as Error).message})`);
  }
  const stored = new Map(entries.map((e) => [e.name, e]));
  const expected = new Set<string>();
  for (const spec of parameterSpecs(config)) {
    expected.add(spec.name);
    const e = stored.get(spec.name);
    if (!e) throw new PageInputError(`${file}: expected a tensor "${spec.name}" (config.json implies it), got none`);
    if (e.shape.join() !== spec.shape.join()) throw new PageInputError(`${file}: expected "${spec.name}" of shape [${spec.shape.join(", ")}] (from config.json), got [${e.shape.join(", ")}]`);
    if (!FLOATS.has(e.dtype)) throw new PageInputError(`${file}: expected "${spec.name}" in F32, F16, BF16 or F64, got ${e.dtype}`);
  }
  // A tied checkpoint may still carry lm_head.weight, which the embedding then stands for.
  const extra = entries.map((e) => e.name).filter((n) => !expected.has(n) && !(n === "lm_head.weight" && config.tieWordEmbeddings));
  if (extra.length > 0) throw new PageInputError(`${file}: expected only the tensors config.json implies, got also ${extra.slice(0, 3).join(", ")}${extra.length > 3 ? ", …" : ""}`);
}

/**
 * The model of a config and one safetensors file, its parameters on `backend` in f32.
 *
 * @example
 * const model = loadModelFromBytes(await configFile.text(), new Uint8Array(await weightsFile.arrayBuffer()));
 */
export function loadModelFromBytes(configText: string, weights: Uint8Array, options: { backend?: Backend; file?: string } = {}): TnlModel {
  const file = options.file ?? "model.safetensors";
  const config = parseConfig(configText);
  checkWeights(config, weights, file);
  const names = parameterSpecs(config).map((s) => s.name);
  const { tensors } = loadSafetensors(weights, { names, source: file, backend: options.backend });
  const params = { layers: [] } as unknown as TnlParams;
  for (const spec of parameterSpecs(config)) {
    const t: Tensor = tensors[spec.name];
    if (t.dtype === "f32") spec.set(params, t);
    else {
      spec.set(params, cast(t, "f32"));
      t.dispose();
    }
  }
  return { config, params };
}
