/**
 * One shape for "how is this part doing": every component (engine, store, MQTT, socket) reports a
 * status and, when not ok, a reason. The daemon's state is `degraded` while any part is, so health,
 * telemetry and `bitad status` never say "online" over a broken part.
 */
export type ComponentStatus = 'ok' | 'degraded' | 'down' | 'off';

export interface ComponentHealth {
  status: ComponentStatus;
  /** Why it is not ok (absent when ok or off). */
  reason?: string;
  /** Component-specific counters (snake_case, as on the wire). */
  [detail: string]: unknown;
}

export type Components = Record<string, ComponentHealth>;

/** `online` when every part is ok or off; else `degraded`, naming the parts that are not. */
export function overallState(components: Components): { state: 'online' | 'degraded'; reasons: string[] } {
  const reasons = Object.entries(components)
    .filter(([, c]) => c.status === 'degraded' || c.status === 'down')
    .map(([name, c]) => `${name}: ${c.status}${c.reason ? ` (${c.reason})` : ''}`);
  return { state: reasons.length ? 'degraded' : 'online', reasons };
}
