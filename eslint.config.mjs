// ESLint for the whole repository: typescript-eslint's type-checked recommended rules on TypeScript,
// ESLint's recommended rules on JavaScript. No rule is switched off project-wide. Each package runs
// `eslint . --max-warnings 0` (its `lint` script); the root's own files are linted by `lint:root`.
import js from "@eslint/js";
import { defineConfig, globalIgnores } from "eslint/config";
import globals from "globals";
import tseslint from "typescript-eslint";

export default defineConfig([
  // Generated and built output only.
  globalIgnores(["**/node_modules/", "**/dist/", "**/dist-gpu/", "**/build/", "**/.cache/", "**/.turbo/", "**/coverage/", "runs/"]),
  {
    linterOptions: { reportUnusedDisableDirectives: "error" },
  },
  {
    files: ["**/*.ts"],
    extends: [js.configs.recommended, tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: {
        projectService: {
          // Build and test configuration files sit outside the packages' tsconfig projects (whose
          // rootDir or include they would break); they are checked with the base compiler options.
          allowDefaultProject: ["*.ts", "packages/*/*.config.ts", "apps/*/*.config.ts"],
          defaultProject: "tsconfig.base.json",
          maximumDefaultProjectFileMatchCount_THIS_WILL_SLOW_DOWN_LINTING: 32,
        },
        tsconfigRootDir: import.meta.dirname,
      },
    },
  },
  {
    files: ["**/*.{js,mjs,cjs}"],
    extends: [js.configs.recommended, tseslint.configs.disableTypeChecked],
    languageOptions: { globals: globals.node },
  },
  {
    // Served to the browser by apps/server.
    files: ["apps/server/public/**/*.js"],
    languageOptions: { globals: globals.browser },
  },
]);
