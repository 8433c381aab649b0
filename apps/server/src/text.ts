/**
 * Generated ids → text, with OpenAI stop strings. Text that could still turn out to be the start
 * of a stop string is held back, so a streamed client never sees part of a stop string and the
 * streamed text always equals the non-streamed text.
 */
import type { StreamDecoder, Tokenizer } from "@lightning-ts/tokenizer";

/**
 * @example
 * const out = new TextStream(tokenizer, ["\n\n"]);
 * const { text, stopped } = out.push(id); // text: what may be sent now
 */
export class TextStream {
  private readonly decoder: StreamDecoder;
  private held = "";
  /** Everything emitted so far. */
  text = "";
  stopped = false;

  constructor(
    tokenizer: Tokenizer,
    private readonly stops: readonly string[],
  ) {
    this.decoder = tokenizer.decoder({ skipSpecialTokens: true });
  }

  push(id: number): { text: string; stopped: boolean } {
    if (this.stopped) return { text: "", stopped: true };
    return this.release(this.held + this.decoder.push(id), false);
  }

  /** The text still held once generation has ended. */
  end(): string {
    if (this.stopped) return "";
    return this.release(this.held + this.decoder.end(), true).text;
  }

  private release(buffer: string, final: boolean): { text: string; stopped: boolean } {
    if (this.stops.length === 0) return this.emit(buffer); // nothing to hold back or cut at
    let cut = -1;
    for (const stop of this.stops) {
      const i = buffer.indexOf(stop);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.held = "";
      return this.emit(buffer.slice(0, cut));
    }
    const keep = final ? 0 : heldSuffix(buffer, this.stops);
    this.held = buffer.slice(buffer.length - keep);
    return this.emit(buffer.slice(0, buffer.length - keep));
  }

  private emit(text: string): { text: string; stopped: boolean } {
    this.text += text;
    return { text, stopped: this.stopped };
  }
}

/** Length of the longest suffix of `buffer` that is a proper prefix of some stop string. */
function heldSuffix(buffer: string, stops: readonly string[]): number {
  let best = 0;
  for (const stop of stops) {
    for (let n = Math.min(stop.length - 1, buffer.length); n > best; n--) {
      if (buffer.endsWith(stop.slice(0, n))) {
        best = n;
        break;
      }
    }
  }
  return best;
}
