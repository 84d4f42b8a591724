/**
 * Typed client of the DETR gateway. Calls are same-origin `fetch`es under /detr/api, so the browser
 * sends the user's CVAT session cookie; unsafe methods carry the `csrftoken` cookie back in
 * `X-CSRFToken`, as CVAT's own client does. The plugin holds no credential of its own.
 */
import { errorFromResponse, networkError } from './errors';
import {
    EpochPoint, Job, ModelList, ModelVersion, OptionSpec, ReportImage, Source, TaskSummary, TrainOptions,
} from './gateway-types';

/** Fixed, same-origin: CVAT's UI build passes no custom settings to plugins. */
export const API_BASE = '/detr/api';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export interface GatewayClient {
    /** The training options: types, limits, choices, help and the site's defaults. */
    getOptions(): Promise<OptionSpec[]>;
    getSummary(source: Source): Promise<TaskSummary>;
    startTraining(source: Source, options: TrainOptions): Promise<Job>;
    /** The task's (or project's) jobs, newest first. */
    listJobs(source: Source): Promise<Job[]>;
    getJob(jobId: string): Promise<Job>;
    cancelJob(jobId: string): Promise<Job>;
    /** The job's loss and validation metrics per epoch, oldest first. */
    getJobMetrics(jobId: string): Promise<EpochPoint[]>;
    /** The task's (or project's) model versions, newest first. */
    listModels(source: Source): Promise<ModelList>;
    getModel(modelId: string): Promise<ModelVersion>;
    /** Starts publishing a version; `replace` unpublishes the task's other published versions once it is ready. */
    publishModel(modelId: string, replace: boolean): Promise<ModelVersion>;
    unpublishModel(modelId: string): Promise<ModelVersion>;
    /** Same-origin URL of a report image (an <img> sends the session cookie; the gateway authorizes it). */
    reportImageUrl(modelId: string, image: ReportImage): string;
}

export interface ClientOptions {
    baseUrl?: string;
    /** Defaults to the global `fetch`, looked up at call time. */
    fetchImpl?: typeof fetch;
}

export function readCookie(name: string): string | null {
    for (const part of document.cookie.split(';')) {
        const [key, ...rest] = part.trim().split('=');
        if (key === name) return decodeURIComponent(rest.join('='));
    }
    return null;
}

/** The body as JSON, or null when the answer is not JSON (e.g. CVAT's index.html from a missing route). */
async function readJson(response: Response): Promise<unknown> {
    const contentType = response.headers.get('content-type') ?? '';
    if (!contentType.includes('application/json')) return null;
    try {
        return await response.json();
    } catch {
        return null;
    }
}

export function createGatewayClient({ baseUrl = API_BASE, fetchImpl }: ClientOptions = {}): GatewayClient {
    async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
        const headers: Record<string, string> = { Accept: 'application/json' };
        if (body !== undefined) headers['Content-Type'] = 'application/json';
        if (!SAFE_METHODS.has(method)) {
            const csrfToken = readCookie('csrftoken');
            if (csrfToken) headers['X-CSRFToken'] = csrfToken;
        }
        let response: Response;
        try {
            response = await (fetchImpl ?? fetch)(`${baseUrl}${path}`, {
                method,
                headers,
                credentials: 'same-origin',
                body: body === undefined ? undefined : JSON.stringify(body),
            });
        } catch {
            throw networkError();
        }
        const payload = await readJson(response);
        if (!response.ok || payload === null) throw errorFromResponse(response.status, payload);
        return payload as T;
    }

    const path = (source: Source): string => `/${source.kind}s/${encodeURIComponent(String(source.id))}`;
    const query = (source: Source): string => `${source.kind}=${encodeURIComponent(String(source.id))}`;
    const job = (jobId: string): string => `/jobs/${encodeURIComponent(jobId)}`;
    const model = (modelId: string): string => `/models/${encodeURIComponent(modelId)}`;

    return {
        getOptions: async () => (await request<{ options: OptionSpec[] }>('GET', '/options')).options,
        getSummary: (source) => request<TaskSummary>('GET', `${path(source)}/summary`),
        startTraining: (source, options) => request<Job>('POST', `${path(source)}/train`, options),
        listJobs: async (source) => {
            const answer = await request<{ jobs: Job[] }>('GET', `/jobs?${query(source)}`);
            return answer.jobs;
        },
        getJob: (jobId) => request<Job>('GET', job(jobId)),
        cancelJob: (jobId) => request<Job>('POST', `${job(jobId)}/cancel`),
        getJobMetrics: async (jobId) => (await request<{ epochs: EpochPoint[] }>('GET', `${job(jobId)}/metrics`)).epochs,
        listModels: (source) => request<ModelList>('GET', `/models?${query(source)}`),
        getModel: (modelId) => request<ModelVersion>('GET', model(modelId)),
        publishModel: (modelId, replace) => request<ModelVersion>('POST', `${model(modelId)}/publish`, { replace }),
        unpublishModel: (modelId) => request<ModelVersion>('POST', `${model(modelId)}/unpublish`),
        reportImageUrl: (modelId, image) => `${baseUrl}${model(modelId)}/report/${encodeURIComponent(image)}`,
    };
}
