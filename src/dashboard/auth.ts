/**
 * Who may use the dashboard. On loopback (the default) anyone on the machine may; exposed on any
 * other address a token is required (as Zigbee2MQTT's frontend does): the page is opened once as
 * `/?token=…`, which sets an HttpOnly SameSite=Strict cookie and redirects to the same URL without
 * it (so the token leaves the address bar and history); scripts send `Authorization: Bearer …`.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

export const COOKIE = 'bitad_dashboard';

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h) || h === '::ffff:127.0.0.1';
}

/**
 * DNS rebinding: a page whose name the attacker re-points at 127.0.0.1 is same-origin with itself,
 * so without a token only requests addressed to a loopback name or address with the listening port
 * are answered (a browser sends the name from its address bar, which rebinding cannot make one of
 * these). `*.localhost` is refused: whether such a name stays on the machine is up to the resolver
 * (RFC 6761 asks; Chromium and Firefox comply, the system resolver may forward it to DNS).
 */
export function loopbackHost(host: string | undefined, port: number): boolean {
  const m = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d+))?$/i.exec(host ?? '');
  return m !== null && isLoopback(m[1]) && Number(m[2] ?? 80) === port;
}

/** Constant-time comparison of the SHA-256 of both, so neither length nor prefix leaks. */
function same(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

function cookieToken(req: IncomingMessage): string | null {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === COOKIE) return decodeURIComponent(v.join('='));
  }
  return null;
}

export type AuthResult = 'ok' | 'refused' | 'redirected';

export class TokenAuth {
  constructor(private readonly token: string | null) {}

  get enabled(): boolean {
    return this.token !== null;
  }

  /**
   * 'ok' to go on; 'redirected' when a good `?token=` was swapped for the cookie (response sent);
   * 'refused' for a missing or wrong token (401 sent: JSON for the API, a short page otherwise).
   */
  check(req: IncomingMessage, res: ServerResponse, url: URL): AuthResult {
    if (this.token === null) return 'ok';
    const header = req.headers.authorization ?? '';
    const bearer = header.startsWith('Bearer ') ? header.slice(7).trim() : null;
    const query = url.searchParams.get('token');
    if (query !== null && req.method === 'GET' && same(query, this.token)) {
      url.searchParams.delete('token');
      res.writeHead(302, {
        'set-cookie': `${COOKIE}=${encodeURIComponent(this.token)}; HttpOnly; SameSite=Strict; Path=/`,
        location: url.pathname + (url.search || ''),
        'cache-control': 'no-store',
      });
      res.end();
      return 'redirected';
    }
    const given = bearer ?? cookieToken(req);
    if (query === null && given !== null && same(given, this.token)) return 'ok';
    const api = url.pathname.startsWith('/api/');
    res.writeHead(401, { 'content-type': api ? 'application/json' : 'text/html; charset=utf-8', 'cache-control': 'no-store', 'www-authenticate': 'Bearer' });
    res.end(
      api
        ? JSON.stringify({ error: 'unauthorized', message: 'missing or wrong dashboard token' })
        : '<!doctype html><title>bitad dashboard</title><h1>401: missing or wrong token</h1><p>Open the dashboard as <code>/?token=&lt;token&gt;</code> once.</p>',
    );
    return 'refused';
  }
}
