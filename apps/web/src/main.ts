/**
 * The page: loads config.json, model.safetensors and tokenizer.json (picked files or a folder URL),
 * creates the WebGPU backend from navigator.gpu, and generates greedily, showing tokens/s and the
 * recurrent state's size. The generated ids are kept in the output's `data-ids` (and the state's
 * bytes in `data-bytes`), where a test can read them.
 */
import { setBackend } from "@lightning-ts/tensor";
import { disposeParams, parameterCount, type TnlModel } from "@lightning-ts/tnl";
import { loadTokenizerJson, type Tokenizer } from "@lightning-ts/tokenizer";
import { createWebGpuBackend } from "@lightning-ts/webgpu";
import { generateGreedy } from "./generate.js";
import { loadModelFromBytes, PageInputError } from "./load.js";

const el = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const ui = {
  device: el("device"),
  configFile: el<HTMLInputElement>("config-file"),
  weightsFile: el<HTMLInputElement>("weights-file"),
  tokenizerFile: el<HTMLInputElement>("tokenizer-file"),
  url: el<HTMLInputElement>("model-url"),
  load: el<HTMLButtonElement>("load"),
  modelInfo: el("model-info"),
  prompt: el<HTMLTextAreaElement>("prompt"),
  maxTokens: el<HTMLInputElement>("max-tokens"),
  generate: el<HTMLButtonElement>("generate"),
  tokensPerS: el("tokens-per-s"),
  stateSize: el("state-size"),
  tokenCount: el("token-count"),
  output: el("output"),
  error: el("error"),
};

let loaded: { model: TnlModel; tokenizer: Tokenizer } | undefined;

const ready = createWebGpuBackend().then(
  (be) => {
    setBackend(be);
    ui.device.textContent = `WebGPU: ${be.capabilities.device}`;
    ui.device.dataset.state = "ready";
  },
  (err: unknown) => {
    ui.device.textContent = "WebGPU: unavailable";
    showError(err);
    throw err;
  },
);
// The page shows the failure; Load meets it again when it awaits `ready`.
ready.catch(() => undefined);

function showError(err: unknown): void {
  ui.error.textContent = err instanceof Error ? `${err.name === "Error" ? "" : `${err.name}: `}${err.message}` : String(err);
  ui.error.dataset.state = "error";
}

function showState(bytes: number): void {
  ui.stateSize.textContent = `state: ${(bytes / 1024).toFixed(1)} KiB (constant)`;
  ui.stateSize.dataset.bytes = String(bytes);
}

/** The three files' contents, from the pickers or else from the folder URL. */
async function readInputs(): Promise<{ config: string; weights: Uint8Array; tokenizer: string }> {
  const picked = [ui.configFile, ui.weightsFile, ui.tokenizerFile].map((i) => i.files?.[0]);
  if (picked.every((f) => f !== undefined)) {
    const [c, w, t] = picked;
    return { config: await c.text(), weights: new Uint8Array(await w.arrayBuffer()), tokenizer: await t.text() };
  }
  const base = ui.url.value.trim();
  if (base === "") throw new PageInputError("model: expected config.json, model.safetensors and tokenizer.json picked above, or a folder URL; got neither");
  const folder = base.endsWith("/") ? base : `${base}/`;
  const get = async (name: string) => {
    const res = await fetch(new URL(name, folder));
    if (!res.ok) throw new PageInputError(`${folder}${name}: expected the file, got HTTP ${res.status}`);
    return res;
  };
  const [c, w, t] = await Promise.all(["config.json", "model.safetensors", "tokenizer.json"].map(get));
  return { config: await c.text(), weights: new Uint8Array(await w.arrayBuffer()), tokenizer: await t.text() };
}

async function load(): Promise<void> {
  ui.error.textContent = "";
  ui.generate.disabled = true;
  ui.modelInfo.textContent = "loading…";
  await ready;
  const inputs = await readInputs();
  let tokenizer: Tokenizer;
  try {
    tokenizer = loadTokenizerJson(inputs.tokenizer);
  } catch (err) {
    throw new PageInputError(`tokenizer.json: ${(err as Error).message}`);
  }
  const model = loadModelFromBytes(inputs.config, inputs.weights);
  if (tokenizer.vocabSize > model.config.vocabSize) {
    disposeParams(model.params);
    throw new PageInputError(`tokenizer.json: expected at most the model's ${model.config.vocabSize} ids, got a vocabulary of ${tokenizer.vocabSize}`);
  }
  if (loaded) disposeParams(loaded.model.params);
  loaded = { model, tokenizer };
  const c = model.config;
  ui.modelInfo.textContent = `${(parameterCount(c) / 1e6).toFixed(2)}M parameters · d ${c.dModel} · ${c.numLayers} layer${c.numLayers === 1 ? "" : "s"} · vocab ${c.vocabSize}`;
  ui.modelInfo.dataset.state = "loaded";
  ui.generate.disabled = false;
}

async function generate(): Promise<void> {
  if (!loaded) throw new PageInputError("generate: expected a loaded model, got none (press Load first)");
  const { model, tokenizer } = loaded;
  ui.error.textContent = "";
  ui.generate.disabled = true;
  const maxTokens = Number(ui.maxTokens.value);
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new PageInputError(`new tokens: expected a positive integer, got ${JSON.stringify(ui.maxTokens.value)}`);
  const prompt = tokenizer.encode(ui.prompt.value);
  if (prompt.length === 0) throw new PageInputError("prompt: expected some text, got none");
  const decoder = tokenizer.decoder();
  const ids: number[] = [];
  ui.output.textContent = ui.prompt.value;
  ui.output.dataset.state = "running";
  for await (const t of generateGreedy(model, prompt, maxTokens, model.config.eosTokenId)) {
    ids.push(t.token);
    ui.output.textContent += decoder.push(t.token);
    showState(t.stateBytes);
    if (ids.length === 1) ui.stateSize.dataset.firstBytes = String(t.stateBytes);
    ui.tokenCount.textContent = `${ids.length} token${ids.length === 1 ? "" : "s"}`;
    // The first token comes from the prefill; the rate is that of the recurrent steps after it.
    if (ids.length > 1) ui.tokensPerS.textContent = `${((ids.length - 1) / (t.ms / 1000)).toFixed(1)} tokens/s`;
  }
  ui.output.dataset.ids = ids.join(",");
  ui.output.dataset.state = "done";
}

const guard = (fn: () => Promise<void>) => () => {
  fn()
    .catch(showError)
    .finally(() => (ui.generate.disabled = loaded === undefined));
};
ui.load.addEventListener("click", guard(load));
ui.generate.addEventListener("click", guard(generate));

