import { createGatewayClient } from '../src/ts/api';
import { GatewayError } from '../src/ts/errors';
import { fakeFetch, html, json } from './fake-fetch';
import { makeJob, makeOptionSchema, makeSummary } from './fixtures';
import { Source } from '../src/ts/gateway-types';

const TASK: Source = { kind: 'task', id: 42 };

describe('gateway client', () => {
    it('sends GETs same-origin under /detr/api without a CSRF header', async () => {
        document.cookie = 'csrftoken=tok123';
        const fetchImpl = fakeFetch({ 'GET /tasks/42/summary': json(200, makeSummary()) });
        const summary = await createGatewayClient({ fetchImpl }).getSummary(TASK);

        expect(summary.task?.name).toBe('street scenes');
        expect(fetchImpl).toHaveBeenCalledWith('/detr/api/tasks/42/summary', expect.objectContaining({
            method: 'GET', credentials: 'same-origin',
        }));
        expect(fetchImpl.calls[0].headers).not.toHaveProperty('X-CSRFToken');
    });

    it('sends the csrftoken cookie back as X-CSRFToken with the JSON body on POST', async () => {
        document.cookie = 'csrftoken=tok%3D123';
        const fetchImpl = fakeFetch({ 'POST /tasks/42/train': json(202, makeJob({ state: 'queued' })) });
        const options = { epochs: 3, image_size: 640, weights: 'coco' as const, val_fraction: 0.2, publish: false };
        const job = await createGatewayClient({ fetchImpl }).startTraining(TASK, options);

        expect(job.state).toBe('queued');
        const [call] = fetchImpl.calls;
        expect(call.headers['X-CSRFToken']).toBe('tok=123');
        expect(call.headers['Content-Type']).toBe('application/json');
        expect(call.init.credentials).toBe('same-origin');
        expect(call.body).toEqual(options);
    });

    it('reads the training options of the gateway', async () => {
        const fetchImpl = fakeFetch({ 'GET /options': json(200, { options: makeOptionSchema() }) });
        const options = await createGatewayClient({ fetchImpl }).getOptions();

        expect(options.find((option) => option.name === 'epochs')).toMatchObject({ minimum: 1, maximum: 10000, default: 50 });
        expect(fetchImpl.calls.map((call) => call.route)).toEqual(['GET /options']);
    });

    it('lists a task’s jobs and escapes job ids in paths', async () => {
        const fetchImpl = fakeFetch({
            'GET /jobs?task=42': json(200, { jobs: [makeJob()] }),
            'GET /jobs/a%2F..%2Fb': json(200, makeJob({ id: 'a/../b' })),
            'POST /jobs/a%2F..%2Fb/cancel': json(200, makeJob({ id: 'a/../b', state: 'cancelled' })),
        });
        const client = createGatewayClient({ fetchImpl });

        expect((await client.listJobs(TASK)).map((job) => job.id)).toEqual(['job-1']);
        expect((await client.getJob('a/../b')).id).toBe('a/../b');
        expect((await client.cancelJob('a/../b')).state).toBe('cancelled');
    });

    it.each([
        [json(401, { error: 'not logged in' }), 'session', /Log in to CVAT again/],
        [json(403, { error: 'you cannot see task 42' }), 'forbidden', /HTTP 403\): you cannot see task 42/],
        [json(404, { error: 'task 42 not found' }), 'not-found', /task 42 not found/],
        [json(400, { error: "'epochs' must be at least 1" }), 'invalid', /'epochs' must be at least 1/],
        [json(500, { error: 'export failed' }), 'server', /HTTP 500\): export failed/],
        [json(503, { error: 'trainer unreachable' }), 'unavailable', /not available right now \(HTTP 503\)/],
        [html(200), 'no-route', /did not answer at \/detr\/api .*route \/detr\//],
        [html(404), 'no-route', /HTTP 404, not a JSON reply/],
        [html(502), 'unavailable', /HTTP 502/],
    ])('turns %# into a %s error with a message saying what to do', async (response, kind, message) => {
        const fetchImpl = fakeFetch({ 'GET /tasks/42/summary': response });
        const error = await createGatewayClient({ fetchImpl }).getSummary(TASK).catch((caught) => caught);

        expect(error).toBeInstanceOf(GatewayError);
        expect(error.kind).toBe(kind);
        expect(error.message).toMatch(message);
    });

    it('reports a 409 with the job that holds the task', async () => {
        const running = makeJob({ id: 'job-7' });
        const fetchImpl = fakeFetch({
            'POST /tasks/42/train': json(409, { error: 'Task 42 is already training (job job-7).', job: running }),
        });
        const options = { epochs: 3, image_size: 640, weights: 'coco' as const, val_fraction: 0.2, publish: false };
        const error = await createGatewayClient({ fetchImpl }).startTraining(TASK, options).catch((caught) => caught);

        expect(error.kind).toBe('conflict');
        expect(error.job).toEqual(running);
        expect(error.message).toBe('Task 42 is already training (job job-7).');
    });

    it('reports a failed connection as a transient network error', async () => {
        const fetchImpl = vi.fn().mockRejectedValue(new TypeError('Failed to fetch'));
        const error = await createGatewayClient({ fetchImpl }).getJob('job-1').catch((caught) => caught);

        expect(error.kind).toBe('network');
        expect(error.transient).toBe(true);
        expect(error.message).toMatch(/Could not reach the DETR service/);
    });

    it('addresses a project under /projects and ?project=', async () => {
        const fetchImpl = fakeFetch({
            'GET /projects/7/summary': json(200, makeSummary({ task: undefined, project: { id: 7, name: 'streets', frames: 5, tasks: [] } })),
            'GET /jobs?project=7': json(200, { jobs: [] }),
            'POST /projects/7/train': json(202, makeJob({ task_id: null })),
        });
        const client = createGatewayClient({ fetchImpl });
        const project: Source = { kind: 'project', id: 7 };

        expect((await client.getSummary(project)).project?.name).toBe('streets');
        expect(await client.listJobs(project)).toEqual([]);
        await client.startTraining(project, { epochs: 5, image_size: 800, weights: 'coco', val_fraction: 0.15, publish: true });
        expect(fetchImpl.calls.map((call) => call.route)).toEqual(
            ['GET /projects/7/summary', 'GET /jobs?project=7', 'POST /projects/7/train']);
    });
});
