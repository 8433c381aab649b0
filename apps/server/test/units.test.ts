import { initState, makeConfig } from "@lightning-ts/tnl";
import { loadTokenizerFile } from "@lightning-ts/tokenizer";
import { liveTensorCount } from "@lightning-ts/tensor";
import { describe, expect, it } from "vitest";
import { loadChatFormat, renderChat } from "../src/chat.js";
import { JSON_START, jsonFeed } from "../src/json-mode.js";
import { prefixKeys, StateLru, stateBytes } from "../src/state-cache.js";
import { TextStream } from "../src/text.js";
import { writeTinyModel } from "./tiny-model.js";

describe("StateLru", () => {
  it("evicts the least recently used states past its byte budget and frees them", () => {
    const c = makeConfig({ vocabSize: 16, dModel: 8, numLayers: 2, numHeads: 2, gluDim: 8 });
    const one = stateBytes(initState(c, 1));
    const before = liveTensorCount();
    const lru = new StateLru<number>(2 * one);
    lru.put("a", initState(c, 1), 1);
    lru.put("b", initState(c, 1), 2);
    lru.get("a")!.state.kv.forEach((t) => t.dispose()); // touch a: b is now the oldest
    lru.put("c", initState(c, 1), 3);
    expect([lru.has("a"), lru.has("b"), lru.has("c")]).toEqual([true, false, true]);
    expect(lru.bytes).toBe(2 * one);
    lru.clear();
    expect(liveTensorCount()).toBe(before);
  });

  it("keys prefixes by whole blocks", () => {
    expect(prefixKeys([1, 2, 3, 4, 5], 2)).toHaveLength(2);
    expect(prefixKeys([1, 2, 3, 4], 2)[0]).toBe(prefixKeys([1, 2, 9], 2)[0]);
    expect(prefixKeys([1, 2, 3, 4], 2)[1]).not.toBe(prefixKeys([1, 2, 3, 5], 2)[1]);
  });
});


describe("TextStream and chat formats", async () => {
  const tiny = await writeTinyModel({ chatTemplate: "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}" });
  const tok = await loadTokenizerFile(tiny.tokenizerPath);

  it("holds back a possible stop string and cuts at the first one", () => {
    const ids = tok.encode("the whale, the white whale");
    const out = new TextStream(tok, ["white"]);
    let streamed = "";
    for (const id of ids) {
      const r = out.push(id);
      streamed += r.text;
      expect("the whale, the ".startsWith(streamed)).toBe(true); // never a piece of the stop string
      if (r.stopped) break;
    }
    expect(streamed + out.end()).toBe("the whale, the ");
    expect(out.stopped).toBe(true);
  });

  it("renders the model's own Jinja chat template when there is one", () => {
    const chat = loadChatFormat(tiny.tokenizerPath, tiny.dir);
    expect(chat.source).toContain("tokenizer_config.json");
    expect(renderChat(chat, [{ role: "user", content: "hi" }])).toBe("<user>hi<assistant>");
  });
});

describe("the JSON recogniser of response_format json_object", () => {
  const done = (text: string) => jsonFeed(JSON_START, text)?.mode === "done";
  it("accepts JSON objects and every prefix of one", () => {
    for (const text of ['{}', '{"a": 1}', '{"a":[1,-2.5e+3,0,true,false,null,"x\\u00e9\\n"],"b":{"c":{}}}', ' {"k" : [ [], {} ] }', '{"é": "日本"}']) {
      expect(done(text), text).toBe(true);
      for (let i = 0; i < text.length; i++) expect(jsonFeed(JSON_START, text.slice(0, i)), text.slice(0, i)).not.toBeNull();
    }
  });
  it("refuses what cannot continue one", () => {
    for (const text of ["[]", '"a"', "1", '{"a" 1}', '{"a":01}', '{"a":1,}', '{a:1}', '{"a":tru}', '{"a":"\u0001"}', '{} x', '{"a":1}}', '{"a":-}', "      {}"]) {
      expect(done(text), text).toBe(false);
    }
    expect(jsonFeed(JSON_START, "[")).toBeNull();
    expect(jsonFeed(JSON_START, '{"a":1}}')).toBeNull();
  });
});
