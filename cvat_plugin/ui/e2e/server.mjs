/**
 * The page origin of the browser test: serves the built harness and forwards /detr/api/* to the
 * gateway, as CVAT's reverse proxy does in a real install, so the plugin's calls are same-origin.
 *
 *   node e2e/server.mjs --base-url http://127.0.0.1:8765/detr/api [--port 8080]
 *
 * `--base-url` is where the gateway's API root is: /detr/api/tasks/1/summary goes to
 * <base-url>/tasks/1/summary (so a gateway mounted at /detr/api or at / both work).
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

export const API_PREFIX = '/detr/api';
export const DIST_DIR = fileURLToPath(new URL('dist/', import.meta.url));

const CONTENT_TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };
// Hop-by-hop headers are the proxy's own business (RFC 9110 section 7.6.1).
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'host']);

function forward(request, response, apiBase) {
    const target = new URL(apiBase);
    const rest = request.url.slice(API_PREFIX.length);
    const headers = Object.fromEntries(Object.entries(request.headers).filter(([name]) => !HOP_BY_HOP.has(name)));
    const upstream = http.request({
        hostname: target.hostname,
        port: target.port,
        method: request.method,
        path: `${target.pathname.replace(/\/$/, '')}${rest.startsWith('/') || rest.startsWith('?') ? rest : `/${rest}`}`,
        headers,
    }, (answer) => {
        response.writeHead(answer.statusCode ?? 502, Object.fromEntries(
            Object.entries(answer.headers).filter(([name]) => !HOP_BY_HOP.has(name)),
        ));
        answer.pipe(response);
    });
    upstream.on('error', () => {
        // What Traefik answers when the service behind a route is down.
        response.writeHead(502, { 'content-type': 'text/plain' });
        response.end('Bad Gateway');
    });
    request.pipe(upstream);
}

async function serveFile(request, response, root) {
    const { pathname } = new URL(request.url, 'http://harness');
    const relative = pathname === '/' ? 'harness.html' : decodeURIComponent(pathname).replace(/^\/+/, '');
    const file = path.resolve(root, relative);
    if (!file.startsWith(path.resolve(root) + path.sep)) {
        response.writeHead(404).end();
        return;
    }
    const info = await stat(file).catch(() => null);
    if (!info?.isFile()) {
        response.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${pathname}`);
        return;
    }
    response.writeHead(200, { 'content-type': CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream' });
    createReadStream(file).pipe(response);
}

/** Starts the server on 127.0.0.1; resolves to its origin and a close function. */
export function startHarnessServer({ apiBase, root = DIST_DIR, port = 0 }) {
    new URL(apiBase); // fails early, with the bad value in the message
    const server = http.createServer((request, response) => {
        if (request.url === API_PREFIX || request.url.startsWith(`${API_PREFIX}/`) || request.url.startsWith(`${API_PREFIX}?`)) {
            forward(request, response, apiBase);
        } else {
            serveFile(request, response, root).catch(() => response.writeHead(500).end());
        }
    });
    return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => resolve({
            url: `http://127.0.0.1:${server.address().port}`,
            close: () => new Promise((done) => {
                server.closeAllConnections();
                server.close(done);
            }),
        }));
    });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
    const { values } = parseArgs({ options: { 'base-url': { type: 'string' }, port: { type: 'string', default: '8080' } } });
    if (!values['base-url']) {
        console.error('usage: node e2e/server.mjs --base-url <gateway API root, e.g. http://127.0.0.1:8765/detr/api> [--port 8080]');
        process.exit(2);
    }
    const { url } = await startHarnessServer({ apiBase: values['base-url'], port: Number(values.port) });
    console.log(`harness at ${url}/ (API proxied to ${values['base-url']}); run \`npm run build:harness\` after changes`);
}
