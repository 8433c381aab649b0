/** Every suite, by command name. A new suite (attention, decode, model, tokenizer) is one line here. */
import type { Suite } from "../suite.js";
import { attentionSuite } from "./attention.js";
import { collectivesSuite } from "./collectives.js";
import { copySuite } from "./copy.js";
import { decodeSuite } from "./decode.js";
import { generateSuite } from "./generate.js";
import { matmulSuite } from "./matmul.js";
import { modelSuite } from "./model.js";
import { serveSuite } from "./serve.js";
import { stateSuite } from "./state.js";
import { tokenizerSuite } from "./tokenizer.js";

export const SUITES: readonly Suite[] = [attentionSuite, decodeSuite, generateSuite, matmulSuite, copySuite, modelSuite, tokenizerSuite, serveSuite, collectivesSuite, stateSuite];
