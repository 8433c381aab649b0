/**
 * The per-token path of a streamed response: `textTemplate` against JSON.stringify of the whole chunk
 * (seeded random texts with quotes, backslashes, control characters, surrogates and line
 * separators; completion and chat chunks, with and without usage), and `writeChunk` against
 * `ServerResponse.write`: the same head and body on the wire, chunked or not (HTTP/1.0). (Node may
 * merge several writes of one tick into one chunk, so the chunks' boundaries may differ.)
 */
import { once } from "node:events";
import { createServer, type ServerResponse } from "node:http";
import { connect } from "node:net";
import { seeded } from "@lightning-ts/tensor/testing";
import { describe, expect, it } from "vitest";
import { textTemplate, writeChunk } from "../src/completions.js";

const PIECES = ['"', "\\", "\n", "\r\n", "\t", "\u0000", "\u001f", "\u2028", "\u2029", "\ud83d\ude00", "\ud800", "\udfff", "é", "</script>", "{}", "a", " the", "data: "];

function randomText(rng: ReturnType<typeof seeded>): string {
  return Array.from({ length: rng.int(7) }, () => PIECES[rng.int(PIECES.length)]).join("");
}

describe("textTemplate", () => {
  const shapes = {
    completion: (text: string) => ({ id: "cmpl-x\"1", object: "text_completion", created: 1764547200, model: "m/é", choices: [{ index: 3, text, logprobs: null, finish_reason: null }] }),
    chat: (text: string) => ({ id: "chatcmpl-y", object: "chat.completion.chunk", created: 7, model: "tiny", choices: [{ index: 0, delta: { content: text }, logprobs: null, finish_reason: null }], usage: null }),
  };

  for (const [name, render] of Object.entries(shapes)) {
    it(`writes what JSON.stringify writes for a ${name} chunk, for any text`, () => {
      const rng = seeded(name.length);
      const json = textTemplate(render);
      for (let i = 0; i < 300; i++) {
        const text = randomText(rng);
        expect(json(text), JSON.stringify(text)).toBe(JSON.stringify(render(text)));
      }
      expect(json("")).toBe(JSON.stringify(render("")));
    });
  }

  it("refuses a render that does not place its text exactly once", () => {
    expect(() => textTemplate(() => ({ text: "fixed" }))).toThrow(/textTemplate: render must place its text exactly once/);
    expect(() => textTemplate((text) => ({ a: text, b: text }))).toThrow(/exactly once/);
  });
});

/** The head and the body of a raw response, its chunked encoding undone; and the chunks' sizes. */
function parse(raw: string): { head: string; body: string; chunks: number[] } {
  const split = raw.indexOf("\r\n\r\n");
  const head = raw.slice(0, split);
  const rest = Buffer.from(raw.slice(split + 4), "utf8");
  if (!/transfer-encoding: chunked/i.test(head)) return { head, body: rest.toString("utf8"), chunks: [] };
  const parts: Buffer[] = [];
  const chunks: number[] = [];
  for (let at = 0; ; ) {
    const eol = rest.indexOf("\r\n", at);
    const size = parseInt(rest.subarray(at, eol).toString("latin1"), 16);
    if (size === 0) break;
    parts.push(rest.subarray(eol + 2, eol + 2 + size));
    chunks.push(size);
    expect(rest.subarray(eol + 2 + size, eol + 4 + size).toString("latin1")).toBe("\r\n");
    at = eol + 4 + size;
  }
  return { head, body: Buffer.concat(parts).toString("utf8"), chunks };
}

/** The raw response to one request of `version`, whose handler writes `events` with `write`. */
async function rawResponse(version: "1.0" | "1.1", events: string[], write: (res: ServerResponse, text: string) => void): Promise<string> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", date: "Tue, 01 Dec 2026 00:00:00 GMT" });
    res.flushHeaders();
    for (const e of events) write(res, e);
    res.end("data: [DONE]\n\n");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  try {
    const socket = connect(port, "127.0.0.1");
    socket.write(`GET / HTTP/${version}\r\nhost: x\r\nconnection: close\r\n\r\n`);
    const parts: Buffer[] = [];
    socket.on("data", (d: Buffer) => parts.push(d));
    await once(socket, "close");
    return Buffer.concat(parts).toString("utf8");
  } finally {
    server.close();
  }
}

describe("writeChunk", () => {
  const rng = seeded(5);
  const events = Array.from({ length: 23 }, () => `data: ${JSON.stringify({ text: randomText(rng) })}\n\n`);

  for (const version of ["1.1", "1.0"] as const) {
    it(`puts the same bytes on the wire as ServerResponse.write (HTTP/${version})`, async () => {
      const direct = parse(await rawResponse(version, events, writeChunk));
      const through = parse(await rawResponse(version, events, (res, text) => res.write(text)));
      expect(direct.head).toBe(through.head);
      expect(direct.body).toBe(through.body);
      expect(direct.body).toBe(events.join("") + "data: [DONE]\n\n");
      // Chunked: one chunk per call, each of its text's UTF-8 bytes.
      if (version === "1.1") expect(direct.chunks.slice(0, events.length)).toEqual(events.map((e) => Buffer.byteLength(e)));
      else expect(direct.chunks).toEqual([]);
    });
  }
});
