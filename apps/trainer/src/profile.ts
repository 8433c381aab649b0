/**
 * `--profile FILE`: one training step timed op by op with `profileOps` of @lightning-ts/tensor; the
 * table goes to the log, the JSON (with the step number) to FILE.
 */
import { writeFileSync } from "node:fs";
import { type Backend, formatProfile, profileOps } from "@lightning-ts/tensor";

/** Runs `fn` (training step `step`) under the op profiler; writes the profile to `file` and the table to `say`. */
export async function profileStep<T>(backend: Backend, step: number, file: string, fn: () => Promise<T>, say: (line: string) => void): Promise<T> {
  const { result, profile } = await profileOps(backend, fn);
  writeFileSync(file, JSON.stringify({ step, ...profile }, null, 2) + "\n");
  say(`\nprofile of step ${step} (${profile.backend}): ${profile.totalMs.toFixed(1)} ms in ops, ${profile.wallMs.toFixed(1)} ms wall; written to ${file}`);
  say(formatProfile(profile));
  return result;
}
