import { packageVitestConfig } from "../../vitest.shared.js";

// Test files share one GPU device each; running them one at a time keeps lavapipe's 2 cores for one
// suite. Those cores are still shared with the other packages' suites under `pnpm test`, where a
// test that takes 30 s alone has taken over 120 s: the limit is five minutes a test here.
export default packageVitestConfig({ fileParallelism: false, testTimeout: 300_000, hookTimeout: 300_000 });
