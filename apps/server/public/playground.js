// The playground: sends the form as an OpenAI request with stream: true, reads the server-sent
// events as they arrive, and shows tokens/s and the server's state memory while it runs.
const $ = (id) => document.getElementById(id);
const output = $("output");
let controller = null;
let history = []; // chat messages so far
let stateHandle = null; // with "keep state": the server-side state of the conversation

const fmtBytes = (n) => (n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(2)} MiB` : `${(n / 1024).toFixed(1)} KiB`);
const mode = () => document.querySelector('input[name="mode"]:checked').value;

fetch("/v1/models").then((r) => r.json()).then((j) => ($("model-name").textContent = j.data[0].id));

async function pollHealth() {
  try {
    const h = await (await fetch("/health")).json();
    const s = h.state_bytes;
    $("state-seq").textContent = `${fmtBytes(s.per_sequence)} (any length)`;
    $("state-all").textContent = `${fmtBytes(s.active + s.prefix_cache + s.handles)} (active ${fmtBytes(s.active)}, prefix cache ${fmtBytes(s.prefix_cache)}, handles ${fmtBytes(s.handles)})`;
    $("server-tps").textContent = h.tokens_per_second.toFixed(1);
  } catch {
    /* the server may be restarting; the next poll tries again */
  }
}
pollHealth();
setInterval(pollHealth, 1000);

function number(id) {
  const v = Number($(id).value);
  return Number.isFinite(v) ? v : undefined;
}

function requestBody() {
  const body = {
    model: $("model-name").textContent,
    max_tokens: number("max_tokens"),
    temperature: number("temperature"),
    top_p: number("top_p"),
    seed: number("seed"),
    stream: true,
    stream_options: { include_usage: true },
  };
  if (number("top_k") > 0) body.top_k = number("top_k");
  if (number("min_p") > 0) body.min_p = number("min_p");
  if (number("repetition_penalty") !== 1) body.repetition_penalty = number("repetition_penalty");
  const text = $("prompt").value;
  if (mode() === "completion") return ["/v1/completions", { ...body, prompt: text }];
  const message = { role: "user", content: text };
  if ($("keep-state").checked) {
    body.return_state = true;
    if (stateHandle) return ["/v1/chat/completions", { ...body, messages: [message], state: stateHandle }];
  }
  return ["/v1/chat/completions", { ...body, messages: [...history, message] }];
}

function showTurn(role, content) {
  const div = document.createElement("div");
  div.className = "turn";
  const b = document.createElement("b");
  b.textContent = `${role}: `;
  div.append(b, document.createTextNode(content));
  $("conversation").append(div);
}

async function send() {
  if (controller) return;
  const [url, body] = requestBody();
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  output.textContent = "";
  output.setAttribute("aria-busy", "true");
  $("status").textContent = "waiting for the first token…";
  const started = performance.now();
  let first = 0;
  let tokens = 0;
  let text = "";
  try {
    const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal: controller.signal });
    if (!res.ok) throw new Error((await res.json()).error?.message ?? res.statusText);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const json = JSON.parse(data);
        if (json.error) throw new Error(json.error.message);
        if (json.usage) $("ntokens").textContent = String(json.usage.completion_tokens);
        for (const choice of json.choices) {
          const piece = choice.text ?? choice.delta?.content ?? "";
          if (piece || choice.logprobs) tokens++;
          if (piece && !first) first = performance.now();
          text += piece;
          output.textContent = text;
          if (choice.state) stateHandle = choice.state;
          if (choice.finish_reason) $("status").textContent = `finished: ${choice.finish_reason}`;
        }
        const seconds = (performance.now() - (first || started)) / 1000;
        if (first) {
          $("ttft").textContent = `${(first - started).toFixed(0)} ms`;
          $("tps").textContent = seconds > 0 ? (tokens / seconds).toFixed(1) : "…";
          if ($("status").textContent.startsWith("waiting")) $("status").textContent = "streaming";
        }
      }
    }
    if (mode() === "chat") {
      history.push({ role: "user", content: $("prompt").value }, { role: "assistant", content: text });
      showTurn("user", $("prompt").value);
      showTurn("assistant", text);
      $("prompt").value = "";
    }
  } catch (err) {
    $("status").textContent = err.name === "AbortError" ? "stopped" : `error: ${err.message}`;
  } finally {
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
    output.setAttribute("aria-busy", "false");
    pollHealth();
  }
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    send();
  }
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && controller) controller.abort();
});
$("stop").addEventListener("click", () => controller?.abort());
$("clear").addEventListener("click", () => {
  history = [];
  stateHandle = null;
  output.textContent = "";
  $("conversation").textContent = "";
  $("status").textContent = "idle";
});
