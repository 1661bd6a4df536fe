/**
 * Wire limits the daemon enforces and the client library checks before sending. They live here,
 * in a module with no imports, so `bitad/client` reads the daemon's own numbers without loading
 * its config schema or its request validator (ajv).
 */

/** The largest `deadline_ms` a request may carry (one day), and so the largest `limits.default_deadline_ms`. */
export const MAX_DEADLINE_MS = 86_400_000;

/** The default `limits.max_payload_bytes`: the largest request payload (bytes) the daemon parses. */
export const DEFAULT_MAX_PAYLOAD_BYTES = 65_536;
