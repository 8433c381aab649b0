/**
 * Chat messages → prompt text. A model's own chat template (the `chat_template` of a
 * `tokenizer_config.json` beside the tokenizer or in the model directory) is rendered with
 * @huggingface/jinja. Without one, the default below is used: one "Role: content" line per
 * message ("Assistant:content" for the assistant's) and a final "Assistant:", with "\nUser:" as an extra stop string so the model does not
 * write the user's next turn.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { Template } from "@huggingface/jinja";

export interface ChatMessage {
  role: string;
  content: string;
}

// An assistant's message follows "Assistant:" with nothing between, as the model wrote it (its
// replies usually begin with a space): a conversation sent back whole is then the same tokens as
// the one continued through a state handle.
export const DEFAULT_CHAT_TEMPLATE =
  "{% for message in messages %}{{ message.role | capitalize }}:{% if message.role != 'assistant' %} {% endif %}{{ message.content }}\n{% endfor %}" +
  "{% if add_generation_prompt %}Assistant:{% endif %}";

export interface ChatFormat {
  template: Template;
  /** Where the template came from (a file, or "default"). */
  source: string;
  /** Stop strings implied by the format. */
  stops: string[];
  specials: Record<string, string>;
}

/**
 * The chat format for a model: its tokenizer_config.json template if there is one, else the default.
 *
 * @example
 * const chat = loadChatFormat("runs/default/model/tokenizer.json", "runs/default/model");
 * renderChat(chat, [{ role: "user", content: "Hi" }]); // "User: Hi\nAssistant:"
 */
export function loadChatFormat(tokenizerPath: string, modelDir: string): ChatFormat {
  for (const file of [join(dirname(tokenizerPath), "tokenizer_config.json"), join(modelDir, "tokenizer_config.json")]) {
    if (!existsSync(file)) continue;
    const cfg = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    if (typeof cfg.chat_template !== "string") continue;
    const token = (k: string) => {
      const v = cfg[k];
      return typeof v === "string" ? v : typeof v === "object" && v && "content" in v ? String((v).content) : "";
    };
    return { template: new Template(cfg.chat_template), source: file, stops: [], specials: { bos_token: token("bos_token"), eos_token: token("eos_token") } };
  }
  return { template: new Template(DEFAULT_CHAT_TEMPLATE), source: "default", stops: ["\nUser:"], specials: {} };
}

export function renderChat(chat: ChatFormat, messages: readonly ChatMessage[]): string {
  return chat.template.render({ messages, add_generation_prompt: true, ...chat.specials });
}

/**
 * The text that follows an assistant's reply when a conversation goes on with `messages`: the
 * template's end of the assistant turn, then `messages`, then the generation prompt. A chat
 * continued through a state handle feeds this, so it sees the same text as the whole
 * conversation sent again (the reply itself is already in the state).
 *
 * @example
 * renderChatContinuation(chat, [{ role: "user", content: "And?" }]); // default format: "\nUser: And?\nAssistant:"
 */
export function renderChatContinuation(chat: ChatFormat, messages: readonly ChatMessage[]): string {
  const reply = "\u0000lightning-reply\u0000";
  const text = renderChat(chat, [{ role: "user", content: "." }, { role: "assistant", content: reply }, ...messages]);
  const at = text.indexOf(reply);
  if (at < 0) throw new Error(`the chat template (${chat.source}) does not show an assistant's reply`);
  return text.slice(at + reply.length);
}
