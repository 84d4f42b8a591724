/** A `fetch` double that routes "METHOD /path?query" (relative to /detr/api) to handlers and records calls. */
import { vi } from 'vitest';

export interface Call {
    method: string;
    route: string;
    init: RequestInit;
    headers: Record<string, string>;
    body: unknown;
}

type Answer = Response | (() => Response | Promise<Response>);

export function json(status: number, body: unknown): Response {
    return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

export function html(status: number): Response {
    return new Response('<!doctype html><title>CVAT</title>', { status, headers: { 'content-type': 'text/html' } });
}

export function fakeFetch(routes: Record<string, Answer>): typeof fetch & { calls: Call[] } {
    const calls: Call[] = [];
    const impl = vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
        const url = String(input);
        const route = `${init.method ?? 'GET'} ${url.replace(/^\/detr\/api/, '')}`;
        calls.push({
            method: init.method ?? 'GET',
            route,
            init,
            headers: { ...(init.headers as Record<string, string>) },
            body: typeof init.body === 'string' ? JSON.parse(init.body) : undefined,
        });
        const answer = routes[route];
        if (answer === undefined) return json(599, { error: `no route in this test for ${route}` });
        return typeof answer === 'function' ? answer() : answer.clone();
    });
    return Object.assign(impl as unknown as typeof fetch, { calls });
}
