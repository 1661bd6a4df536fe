/**
 * What the dashboard takes of a board's telemetry. A board (a buggy build, or a hostile client
 * with publish rights on its topic) is trusted with figures, not with the page's rules: the fields
 * the status rules and the board page read are checked here, once, where telemetry comes in (live
 * from the broker, and from the dashboard's own db after a restart, which an older version wrote).
 */

import { INTERVAL_S_MAX, INTERVAL_S_MIN } from '../daemon/config/schema.js';

/** Reasons are one line on a card; a longer one is a board writing into the page. */
const REASON_CHARS = 200;
const STATUS_CHARS = 32;
/** The daemon reports four parts; room for more, not for thousands. */
const MAX_COMPONENTS = 32;
/** Read as objects by the card view and the board page. */
const OBJECT_FIELDS = ['tree', 'load'] as const;

export type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `raw` with its checked fields made safe; every other field as the board sent it. */
export function cleanTelemetry(raw: Json): Json {
  const t: Json = { ...raw };
  const w = t.window_s;
  // The daemon's own range for `telemetry.interval_s`. A window outside it is dropped, not
  // clamped: the stale rule then uses its default (90 s), where 1e12 would have meant never stale
  // and -1 stale at once.
  if (typeof w !== 'number' || !(w >= INTERVAL_S_MIN && w <= INTERVAL_S_MAX)) delete t.window_s;
  if (typeof t.state === 'string') t.state = t.state.slice(0, STATUS_CHARS);
  else delete t.state;
  for (const k of OBJECT_FIELDS) if (!isObject(t[k])) delete t[k];
  if (isObject(t.components)) t.components = cleanComponents(t.components);
  else delete t.components;
  return t;
}

/** Only parts with a status string are kept (the board page prints `name: status (reason)`). */
function cleanComponents(raw: Json): Json {
  const out: Json = {};
  for (const [name, c] of Object.entries(raw).slice(0, MAX_COMPONENTS)) {
    if (!isObject(c) || typeof c.status !== 'string') continue;
    const { reason, ...rest } = c;
    out[name.slice(0, STATUS_CHARS)] = { ...rest, status: c.status.slice(0, STATUS_CHARS), ...(typeof reason === 'string' ? { reason: reason.slice(0, REASON_CHARS) } : {}) };
  }
  return out;
}
