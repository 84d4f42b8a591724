/**
 * Errors of gateway calls, each with a message that says what happened and what to do.
 *
 *   GatewayError.kind
 *     network      the request never got an answer
 *     no-route     something other than the gateway answered (CVAT's UI server without a /detr/ route)
 *     unavailable  the gateway or the trainer is down or restarting (502/503/504)
 *     session      CVAT says the user is not logged in (401)
 *     forbidden    CVAT refused the user or the CSRF check failed (403)
 *     not-found    no such task or job (404)
 *     conflict     the task already has a queued or running job (409; `job` holds it)
 *     invalid      the gateway rejected the request (400/422)
 *     server       any other failure
 */
import { Job } from './gateway-types';

export type GatewayErrorKind =
    'network' | 'no-route' | 'unavailable' | 'session' | 'forbidden' | 'not-found' | 'conflict' | 'invalid' | 'server';

export class GatewayError extends Error {
    constructor(
        readonly kind: GatewayErrorKind,
        readonly status: number | null,
        message: string,
        readonly job: Job | null = null,
    ) {
        super(message);
        this.name = 'GatewayError';
    }

    /** Worth retrying without the user doing anything. */
    get transient(): boolean {
        return this.kind === 'network' || this.kind === 'unavailable';
    }
}

const ASK_ADMIN_ROUTE = 'A CVAT admin needs to route /detr/ to the DETR gateway (see deploy/docker-compose.detr.yml).';

export function networkError(): GatewayError {
    return new GatewayError(
        'network',
        null,
        'Could not reach the DETR service (network error). Check your connection; ' +
            'if this persists, ask a CVAT admin whether the DETR gateway is running.',
    );
}

/** Turns a non-2xx answer, or a 2xx answer that is not JSON, into a GatewayError. */
export function errorFromResponse(status: number, payload: unknown): GatewayError {
    const body = (payload ?? {}) as { error?: unknown; job?: unknown };
    const serverMessage = typeof body.error === 'string' && body.error.trim() ? body.error.trim() : null;
    const explained = (fallback: string): string => serverMessage ?? fallback;

    if (status === 502 || status === 503 || status === 504) {
        return new GatewayError(
            'unavailable',
            status,
            `The DETR service is not available right now (HTTP ${status}). It may be starting or restarting; ` +
                'try again in a minute, or ask a CVAT admin to check the DETR gateway and trainer.',
        );
    }
    if (payload === null) {
        return new GatewayError(
            'no-route',
            status,
            `The DETR service did not answer at /detr/api (HTTP ${status}, not a JSON reply). ${ASK_ADMIN_ROUTE}`,
        );
    }
    if (status === 401) {
        return new GatewayError(
            'session',
            status,
            'Your CVAT session has ended (HTTP 401). Log in to CVAT again, then reopen this dialog.',
        );
    }
    if (status === 403) {
        return new GatewayError(
            'forbidden',
            status,
            `CVAT refused this action (HTTP 403): ${explained('you do not have access to this task')}. ` +
                'Ask the task owner or a CVAT admin for access, or reload the page if your session changed.',
        );
    }
    if (status === 404) {
        return new GatewayError('not-found', status, `Not found (HTTP 404): ${explained('no such task or job')}.`);
    }
    if (status === 409) {
        const job = body.job && typeof body.job === 'object' ? (body.job as Job) : null;
        return new GatewayError('conflict', status, explained('This task is already training.'), job);
    }
    if (status === 400 || status === 422) {
        return new GatewayError('invalid', status, `The DETR service rejected the request: ${explained('invalid request')}`);
    }
    return new GatewayError(
        'server',
        status,
        `The DETR service failed (HTTP ${status}): ${explained('no details given')}. ` +
            'Try again; if it fails again, send this message to a CVAT admin.',
    );
}

/** Any thrown value as a GatewayError, so views have one type to render. */
export function asGatewayError(error: unknown): GatewayError {
    if (error instanceof GatewayError) return error;
    const detail = error instanceof Error ? error.message : String(error);
    return new GatewayError('server', null, `Unexpected error in the Train DETR plugin: ${detail}`);
}
