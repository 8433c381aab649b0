import { packageVitestConfig } from "../../vitest.shared.js";

// Test files share one GPU device each; running them one at a time keeps lavapipe's 2 cores for one suite.
export default packageVitestConfig({ fileParallelism: false });
