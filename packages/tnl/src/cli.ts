#!/usr/bin/env node
/** Entry of the `tnl` binary; the commands live in cli-main.ts. */
import { main } from "./cli-main.js";

process.exitCode = await main(process.argv.slice(2));
