#!/usr/bin/env node
import { CommanderError } from "commander";
import { tokenizerProgram } from "./command.js";

tokenizerProgram()
  .parseAsync()
  .catch((e: unknown) => {
    // Commander has already printed its own usage errors (and help, which "fails" with code 0).
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode;
      return;
    }
    process.stderr.write(`tokenizer: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  });
