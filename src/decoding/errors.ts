/** Typed errors of the decoding core; the engine maps `code` onto its own error codes. */

/** The prompt leaves no room for even one generated token within the model's positions. */
export class PromptTooLongError extends Error {
  readonly code = 'prompt_too_long' as const;
  constructor(
    readonly promptTokens: number,
    readonly maxPositions: number,
  ) {
    super(`prompt of ${promptTokens} tokens does not fit: at most ${maxPositions - 1} tokens leave room to generate`);
    this.name = 'PromptTooLongError';
  }
}

/** The caller broke the decoder's protocol (empty prompt, step after the context is full, ...). */
export class DecoderStateError extends Error {
  readonly code = 'bad_request' as const;
  constructor(message: string) {
    super(message);
    this.name = 'DecoderStateError';
  }
}
