/** Errors raised for bad arguments name the op, the argument, what was expected and what came. */

export class OpArgumentError extends Error {
  constructor(
    readonly op: string,
    readonly argument: string,
    readonly expected: string,
    readonly received: string,
  ) {
    super(`${op}: argument '${argument}' expected ${expected}, got ${received}`);
    this.name = "OpArgumentError";
  }
}

/** Thrown when a backend declares an op it cannot run. */
export class UnsupportedOpError extends Error {
  constructor(
    readonly op: string,
    readonly backend: string,
    readonly reason: string,
  ) {
    super(`${op} is not supported by the ${backend} backend: ${reason}`);
    this.name = "UnsupportedOpError";
  }
}

export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

export function argError(op: string, argument: string, expected: string, received: string): never {
  throw new OpArgumentError(op, argument, expected, received);
}
