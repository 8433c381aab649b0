/** Every failure of this package: the message names the argument, what was expected and what came. */
export class TokenizerError extends Error {
  override name = "TokenizerError";
}

/** Text that describes what came, written as is (other values are shown quoted or summarised). */
export class Prose {
  constructor(readonly text: string) {}
}

export const prose = (text: string): Prose => new Prose(text);

/** Builds the "`arg`: expected X, got Y" message used throughout, so every error reads the same way. */
export function fail(arg: string, expected: string, got: unknown): never {
  throw new TokenizerError(`${arg}: expected ${expected}, got ${describe(got)}`);
}

function describe(value: unknown): string {
  if (value instanceof Prose) return value.text;
  if (typeof value === "string") return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (value === null || value === undefined || typeof value !== "object") return String(value);
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  return `an object with keys ${JSON.stringify(Object.keys(value).slice(0, 8))}`;
}
