/** Bad token ids, or a state that does not fit the model it is used with. */
export class TnlInputError extends Error {
  override name = "TnlInputError";
}
