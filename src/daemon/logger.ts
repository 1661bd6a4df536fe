/** Structured JSON logs to stdout (journald stores them as they are). */
import pino, { type Logger } from 'pino';

export function createLogger(level: string, nodeId: string): Logger {
  return pino({ level, base: { node_id: nodeId }, timestamp: pino.stdTimeFunctions.isoTime });
}
