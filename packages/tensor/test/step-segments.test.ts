/**
 * lightningStep with prompt segments on the CPU backend (the suite of step-segments-suite.ts).
 */
import { getBackend } from "@lightning-ts/tensor";
import { describe } from "vitest";
import { stepSegmentsSuite } from "./step-segments-suite.js";

describe("lightningStep with prompt segments [cpu]", () => stepSegmentsSuite(() => getBackend()));
