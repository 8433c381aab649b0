/** Starts a server on a free loopback port over the tiny test model. */
import { loadCheckpoint, type TnlModel } from "@lightning-ts/tnl";
import { loadTokenizerFile, type Tokenizer } from "@lightning-ts/tokenizer";
import { loadChatFormat } from "../src/chat.js";
import { buildServer, type LightningServer, type ServerOptions } from "../src/server.js";
import { type TinyModel, writeTinyModel } from "./tiny-model.js";

export interface Running extends LightningServer {
  url: string;
  model: TnlModel;
  tokenizer: Tokenizer;
  tiny: TinyModel;
}

let tinyOnce: Promise<TinyModel> | undefined;

export async function startServer(options: Partial<ServerOptions> = {}): Promise<Running> {
  const tiny = await (tinyOnce ??= writeTinyModel());
  const model = await loadCheckpoint(tiny.dir);
  const tokenizer = await loadTokenizerFile(tiny.tokenizerPath);
  const server = buildServer({ model, tokenizer, chat: loadChatFormat(tiny.tokenizerPath, tiny.dir), modelName: "tiny", ...options });
  const url = await server.app.listen({ host: "127.0.0.1", port: 0 });
  return { ...server, url, model, tokenizer, tiny };
}

/** The parts of a response body that the tests read: an OpenAI-style error, or a completion. */
export interface ResponseBody {
  error: { message: string; type: string; param: string | null; code: string | null };
  choices: { text: string; state?: string }[];
  usage: { prompt_tokens: number; completion_tokens: number };
}

export async function postJson(url: string, body: unknown, init: RequestInit = {}): Promise<{ status: number; json: ResponseBody }> {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: typeof body === "string" ? body : JSON.stringify(body), ...init });
  return { status: res.status, json: (await res.json()) as ResponseBody };
}

export async function waitFor(check: () => Promise<boolean> | boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("waitFor: timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}
