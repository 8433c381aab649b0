#!/usr/bin/env node
// The `tokenizer` command (src/cli.ts, built into dist/). This launcher is committed so that the
// bin exists, and package managers can link it, before the package is built.
await import("../dist/cli.js");
