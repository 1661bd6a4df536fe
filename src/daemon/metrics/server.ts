/**
 * The /metrics HTTP endpoint: GET /metrics answers the Prometheus text format, every other path 404,
 * other methods 405. Loopback by default (config metrics.host): the metrics name the model and the
 * board, and there is no auth, so exposing it is a deliberate choice (or a reverse proxy's job).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

export class MetricsServer {
  private server: Server | null = null;
  /** The bound port (differs from the configured one when that was 0). */
  port = 0;

  constructor(
    private readonly registry: Registry,
    private readonly host: string,
    private readonly configuredPort: number,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const server = createServer((req, res) => void this.serve(req, res));
    // A scraper that keeps its connection alive must not hold the daemon's stop.
    server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.configuredPort, this.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') return plain(res, 404, 'not found; metrics are at /metrics\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return plain(res, 405, 'method not allowed\n');
    }
    try {
      const body = await this.registry.metrics();
      res.writeHead(200, { 'Content-Type': this.registry.contentType, 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch (e) {
      this.log.warn({ err: e }, 'metrics scrape failed');
      plain(res, 500, 'metrics collection failed\n');
    }
  }
}

function plain(res: ServerResponse, code: number, text: string): void {
  res.writeHead(code, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(text);
}
