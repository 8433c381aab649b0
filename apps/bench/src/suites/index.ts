/** Every suite, by command name. A new suite (attention, decode, model, tokenizer) is one line here. */
import type { Suite } from "../suite.js";
import { attentionSuite } from "./attention.js";
import { matmulSuite } from "./matmul.js";
import { serveSuite } from "./serve.js";
import { tokenizerSuite } from "./tokenizer.js";

export const SUITES: readonly Suite[] = [attentionSuite, matmulSuite, tokenizerSuite, serveSuite];
