import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';

const ASSETS: { path: string; file: string; contentType: string }[] = [
  { path: '/', file: 'index.html', contentType: 'text/html; charset=utf-8' },
  { path: '/playground/app.js', file: 'app.js', contentType: 'text/javascript; charset=utf-8' },
  { path: '/playground/style.css', file: 'style.css', contentType: 'text/css; charset=utf-8' },
];

/** The page runs only its own script and style and talks only to this server. */
const CONTENT_SECURITY_POLICY = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** GET / : the web playground, plain static files read once at start (no build step). */
export function registerPlayground(app: FastifyInstance): void {
  for (const asset of ASSETS) {
    const body = readFileSync(new URL(`./playground/${asset.file}`, import.meta.url));
    app.get(asset.path, async (_request, reply) =>
      reply
        .type(asset.contentType)
        .header('cache-control', 'no-cache')
        .header('x-content-type-options', 'nosniff')
        .header('content-security-policy', CONTENT_SECURITY_POLICY)
        .send(body),
    );
  }
}
