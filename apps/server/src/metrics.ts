/**
 * Prometheus metrics through prom-client: the process defaults (RSS, heap, event-loop lag) plus
 * the engine's queue depth, active sequences, tokens/s, state memory and prefix-cache counters,
 * read from the engine at scrape time so the hot loop does no metric work.
 */
import { getBackend } from "@lightning-ts/tensor";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { Engine } from "./engine.js";
import type { StateLru } from "./state-cache.js";

export interface ServerMetrics {
  registry: Registry;
  requests: Counter<"endpoint" | "status">;
  timeToFirstToken: Histogram;
  requestSeconds: Histogram<"endpoint">;
  /** Requests that count themselves in `requests` (streams, which fastify sees end as a 200 whatever happened). */
  countedElsewhere: WeakSet<object>;
}

/** A counter that follows a running total kept elsewhere. */
function followingCounter(registry: Registry, name: string, help: string, total: () => number): void {
  let seen = 0;
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const now = total();
      this.inc(now - seen);
      seen = now;
    },
  });
}

/**
 * @example
 * const metrics = createMetrics(engine, handles);
 * reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
 */
export function createMetrics(engine: Engine, handles: StateLru<number[]>): ServerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const gauge = (name: string, help: string, value: () => number) =>
    new Gauge({ name, help, registers: [registry], collect() { this.set(value()); } });
  gauge("lightning_queue_depth", "Sequences waiting for a batch slot", () => engine.queueDepth);
  gauge("lightning_active_sequences", "Sequences in the decode batch or reading their prompt", () => engine.activeCount);
  gauge("lightning_tokens_per_second", "Generated tokens per second over the last 5 s", () => engine.tokensPerSecond());
  new Gauge({
    name: "lightning_state_bytes",
    help: "Bytes of recurrent state held, by holder",
    labelNames: ["holder"],
    registers: [registry],
    collect() {
      this.set({ holder: "active" }, engine.activeStateBytes);
      this.set({ holder: "prefix_cache" }, engine.prefixCache.bytes);
      this.set({ holder: "handles" }, handles.bytes);
    },
  });
  gauge("lightning_backend_live_bytes", "Bytes held by live tensors on the compute backend (weights included)", () => getBackend().memory().liveBytes);
  followingCounter(registry, "lightning_generated_tokens_total", "Tokens generated", () => engine.tokensGenerated);
  followingCounter(registry, "lightning_prefill_tokens_total", "Prompt tokens run through prefill", () => engine.prefillTokens);
  followingCounter(registry, "lightning_prefix_cache_hits_total", "Prompts that started from a cached prefix state", () => engine.prefixCache.hits);
  followingCounter(registry, "lightning_prefix_cache_misses_total", "Prompts with no cached prefix state", () => engine.prefixCache.misses);
  followingCounter(registry, "lightning_admitted_sequences_total", "Sequences taken from the queue into the batch", () => engine.admitted);
  followingCounter(registry, "lightning_queue_seconds_total", "Seconds admitted sequences waited in the queue", () => engine.queueSeconds);
  followingCounter(registry, "lightning_first_tokens_total", "Sequences that generated their first token", () => engine.firstTokens);
  followingCounter(
    registry,
    "lightning_steps_to_first_token_total",
    "Decode steps launched between a sequence's admission and its first token, summed over sequences",
    () => engine.stepsToFirstToken,
  );
  followingCounter(registry, "lightning_cancelled_sequences_total", "Sequences ended by a client disconnect or timeout", () => engine.cancelled);
  return {
    registry,
    countedElsewhere: new WeakSet(),
    requests: new Counter({ name: "lightning_requests_total", help: "HTTP requests by endpoint and status", labelNames: ["endpoint", "status"], registers: [registry] }),
    timeToFirstToken: new Histogram({
      name: "lightning_time_to_first_token_seconds",
      help: "From request arrival to the first generated token",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    requestSeconds: new Histogram({
      name: "lightning_request_seconds",
      help: "Generation request latency",
      labelNames: ["endpoint"],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers: [registry],
    }),
  };
}
