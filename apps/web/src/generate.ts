/**
 * The page's decode loop: one prefill of the prompt, then one recurrent step per token, greedy.
 * It reports each token with the bytes of the state it holds, measured from the state's tensors,
 * so the page can show that they stay the same as the text grows.
 */
import { disposeState, greedy, prefill, step, type TnlModel, type TnlState } from "@lightning-ts/tnl";

export interface PageToken {
  token: number;
  /** Bytes of the recurrent state after this token was drawn. */
  stateBytes: number;
  /** Milliseconds since the first token (0 for it). */
  ms: number;
}

/** Bytes held by a state's tensors. */
export function stateBytes(s: TnlState): number {
  return s.kv.reduce((sum, t) => sum + t.size * (t.dtype === "f64" ? 8 : 4), 0);
}

/**
 * Greedy tokens after `prompt`, at most `maxTokens`, stopping after `stopId` when it is drawn.
 *
 * @example
 * for await (const t of generateGreedy(model, tokenizer.encode("Hi"), 16)) out.textContent += decoder.push(t.token);
 */
export async function* generateGreedy(model: TnlModel, prompt: readonly number[], maxTokens: number, stopId?: number): AsyncGenerator<PageToken> {
  if (prompt.length === 0) throw new RangeError("generate: the prompt must hold at least one token, got none");
  const { params, config } = model;
  const pick = greedy();
  let { logits, state } = prefill(params, config, [prompt], { logits: "last" });
  let first: number | undefined;
  const history: number[] = [];
  try {
    for (let i = 0; i < maxTokens; i++) {
      const data = (await logits.data()) as Float32Array;
      logits.dispose();
      const token = pick(data, { prompt, generated: history, random: Math.random });
      history.push(token);
      const now = performance.now();
      first ??= now;
      yield { token, stateBytes: stateBytes(state), ms: now - first };
      if (token === stopId || i + 1 === maxTokens) break;
      const next = step(params, config, state, [token]);
      disposeState(state);
      ({ logits, state } = next);
    }
  } finally {
    logits.dispose();
    disposeState(state);
  }
}
