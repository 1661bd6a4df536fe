/**
 * Typed failures of a request made through the client library. `code` is either one of the
 * daemon's error codes (docs/daemon.md "Error codes"), copied from its final reply, or one of the
 * few the client decides itself (no reply, connection gone, client closed).
 */
import type { ErrorCode } from '../daemon/protocol/envelope.js';

/** The daemon's error codes, as its final error replies carry them. */
export type DaemonErrorCode = ErrorCode;

/**
 * Failures the client itself decides:
 * - `no_reply`: every attempt went without a sign of life for `idleTimeoutMs` (a dead board);
 * - `disconnected`: the Unix socket closed under the request;
 * - `closed`: `client.close()` was called with the request in flight.
 * A local deadline and an `AbortSignal` use the daemon's `deadline_exceeded` and `cancelled`.
 */
export type ClientErrorCode = 'no_reply' | 'disconnected' | 'closed';

export type BitadErrorCode = DaemonErrorCode | ClientErrorCode;

/** Error codes after which the same request may succeed on a retry (another board, or later). */
export const RETRYABLE_CODES: ReadonlySet<BitadErrorCode> = new Set<BitadErrorCode>(['busy', 'shutting_down']);

export class BitadError extends Error {
  override readonly name = 'BitadError';

  constructor(
    readonly code: BitadErrorCode,
    /** The reason without the code (the daemon's `error.message`, or the client's). */
    readonly detail: string,
    /** The request's transaction (null for a connection-level failure). */
    readonly transaction: string | null,
    /** True when the code came from the daemon's final reply, false when the client decided it. */
    readonly fromDaemon: boolean,
  ) {
    super(`${code}: ${detail}`);
  }
}
