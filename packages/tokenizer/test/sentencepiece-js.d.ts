/** Types for the WebAssembly build of SentencePiece used as a test oracle (the package ships none). */
declare module "@agnai/sentencepiece-js" {
  export class SentencePieceProcessor {
    load(path: string): Promise<void>;
    encodeIds(text: string): number[];
    encodePieces(text: string): string[];
    decodeIds(ids: number[]): string;
  }
}
