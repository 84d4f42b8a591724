import React from 'react';
import { act, render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';

import { createGatewayClient } from '../src/ts/api';
import { TrainDialog } from '../src/ts/train-dialog';
import { fakeFetch, html, json } from './fake-fetch';
import { findButton, getButton, queryButton } from './buttons';
import { makeJob, makeModel, makeOptionSchema, makeSummary } from './fixtures';

function renderDialog(routes: Parameters<typeof fakeFetch>[0], onClose = () => undefined): ReturnType<typeof fakeFetch> {
    const fetchImpl = fakeFetch(routes);
    render(<TrainDialog source={{ kind: 'task', id: 42 }} client={createGatewayClient({ fetchImpl })} onClose={onClose} />);
    return fetchImpl;
}

const options = json(200, { options: makeOptionSchema() });
/** No jobs yet, and the gateway's training options. */
const noJobs = { 'GET /jobs?task=42': json(200, { jobs: [] }), 'GET /options': options };

describe('Train DETR dialog', () => {
    it('prefills the form with the gateway’s defaults and shows the task’s warnings before starting', async () => {
        renderDialog({ 'GET /tasks/42/summary': json(200, makeSummary()), ...noJobs });

        expect(await screen.findByLabelText('Epochs')).toHaveValue('50');
        expect(screen.getByLabelText('Image size')).toHaveValue('800');
        expect(screen.getByLabelText('Validation share')).toHaveValue('15');
        expect(screen.getByLabelText('Publish when done')).toBeChecked();
        expect(screen.getByText(/^coco: COCO-pretrained DETR/)).toBeInTheDocument();
        expect(screen.getByText('Train DETR: street scenes')).toBeInTheDocument();
        expect(screen.getByText('Check before training')).toBeInTheDocument();
        expect(screen.getByText(/label 'bicycle' has only 4 boxes/)).toBeInTheDocument();
        expect(screen.getByText('bicycle: 4')).toBeInTheDocument();
        expect(screen.getByText('96 of 120 frames annotated, 309 boxes:')).toBeInTheDocument();
        expect(getButton('Start training')).toBeEnabled();
    });

    it('blocks starting a task without boxes and says what to do', async () => {
        const empty = makeSummary({
            labels: [{ id: 1, name: 'car', boxes: 0 }],
            annotated_frames: 0,
            warnings: ['the task has no annotations: draw boxes first'],
        });
        renderDialog({ 'GET /tasks/42/summary': json(200, empty), ...noJobs });

        expect(await screen.findByText('Nothing to train on yet')).toBeInTheDocument();
        expect(screen.getByText('the task has no annotations: draw boxes first')).toBeInTheDocument();
        expect(getButton('Start training')).toBeDisabled();
    });

    it('explains an empty field and sends nothing', async () => {
        const user = userEvent.setup();
        const fetchImpl = renderDialog({ 'GET /tasks/42/summary': json(200, makeSummary()), ...noJobs });
        await user.clear(await screen.findByLabelText('Epochs'));
        await user.click(getButton('Start training'));

        expect(await screen.findByText('Enter the number of epochs: a whole number from 1 to 10000.')).toBeInTheDocument();
        expect(fetchImpl.calls.map((call) => call.method)).not.toContain('POST');
    });

    it('starts a job with the chosen options and shows its progress', async () => {
        const user = userEvent.setup();
        document.cookie = 'csrftoken=csrf-42';
        const queued = makeJob({ state: 'queued', epoch: 0, step: 0, progress: 0, loss: null, metrics: {}, eta_s: null });
        const fetchImpl = renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary()),
            ...noJobs,
            'POST /tasks/42/train': json(202, queued),
            'GET /jobs/job-1': json(200, queued),
        });
        const epochs = await screen.findByLabelText('Epochs');
        await user.clear(epochs);
        await user.type(epochs, '3');
        await user.click(screen.getByLabelText('Publish when done'));
        await user.click(getButton('Start training'));

        expect(await screen.findByText('Queued: waiting for the trainer to start this job')).toBeInTheDocument();
        const post = fetchImpl.calls.find((call) => call.method === 'POST');
        expect(post?.route).toBe('POST /tasks/42/train');
        expect(post?.headers['X-CSRFToken']).toBe('csrf-42');
        expect(post?.body).toEqual({ epochs: 3, image_size: 800, weights: 'coco', val_fraction: 0.15, publish: false });
    });

    it('shows the running job when the task is already training (409)', async () => {
        const user = userEvent.setup();
        const running = makeJob({ id: 'job-7', epoch: 2, epochs: 10 });
        renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary()),
            ...noJobs,
            'POST /tasks/42/train': json(409, { error: 'Task 42 is already training (job job-7).', job: running }),
            'GET /jobs/job-7': json(200, running),
        });
        await user.click(await findButton('Start training'));

        expect(await screen.findByText('Task 42 is already training (job job-7). Showing that job instead.')).toBeInTheDocument();
        expect(screen.getByText('Epoch 2 of 10 (step 5 of 20)')).toBeInTheDocument();
        expect(screen.getByText('job-7')).toBeInTheDocument();
    });

    it('keeps the form and shows the gateway’s reason when starting fails', async () => {
        const user = userEvent.setup();
        renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary()),
            ...noJobs,
            'POST /tasks/42/train': json(403, { error: 'CSRF check failed; reload the page' }),
        });
        await user.click(await findButton('Start training'));

        expect(await screen.findByText(/CVAT refused this action \(HTTP 403\): CSRF check failed; reload the page/))
            .toBeInTheDocument();
        expect(getButton('Start training')).toBeEnabled();
    });

    it('disables publishing with the reason when the trainer cannot publish', async () => {
        const reason = 'This trainer cannot publish models: it has no Nuclio dashboard.';
        renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary({ publish_unavailable: reason })),
            ...noJobs,
        });

        const publish = await screen.findByLabelText('Publish when done');
        expect(publish).toBeDisabled();
        expect(publish).not.toBeChecked();
        expect(screen.getByText(reason)).toBeInTheDocument();
    });

    it('drops the error of a failed start once a field changes', async () => {
        const user = userEvent.setup();
        renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary()),
            ...noJobs,
            'POST /tasks/42/train': json(400, { error: "the trainer has no 'coco' weights" }),
        });
        await user.click(await findButton('Start training'));
        expect(await screen.findByText(/the trainer has no 'coco' weights/)).toBeInTheDocument();

        await user.type(screen.getByLabelText('Epochs'), '0');
        expect(screen.queryByText(/the trainer has no 'coco' weights/)).not.toBeInTheDocument();
    });

    it.each([
        ['4096 px starts as typed', 4096, 1400],
        ['1333 px starts at that maximum', 1333, 1333],
    ])('takes the limits from the gateway: 1400 px with a maximum of %s', async (_, maximum, sent) => {
        const user = userEvent.setup();
        const queued = makeJob({ state: 'queued', epoch: 0, step: 0, progress: 0, loss: null, metrics: {}, eta_s: null });
        const fetchImpl = renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary()),
            'GET /jobs?task=42': json(200, { jobs: [] }),
            'GET /options': json(200, { options: makeOptionSchema({ image_size: { maximum, default: 640 } }) }),
            'POST /tasks/42/train': json(202, queued),
            'GET /jobs/job-1': json(200, queued),
        });
        const size = await screen.findByLabelText('Image size');
        expect(size).toHaveValue('640');
        await user.clear(size);
        await user.type(size, '1400');
        await user.click(getButton('Start training'));  // the field keeps to the gateway's range as it loses focus

        expect(await screen.findByText('Queued: waiting for the trainer to start this job')).toBeInTheDocument();
        expect(fetchImpl.calls.find((call) => call.method === 'POST')?.body).toMatchObject({ image_size: sent });
    });

    it('starts from weights the task has when the site’s default is not among them', async () => {
        renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary({ weights_options: ['scratch', 'previous'] })),
            ...noJobs,
        });
        expect(await screen.findByText(/^scratch: Random initialisation/)).toBeInTheDocument();
    });

    it('says it is loading the options and offers no start until they are there', async () => {
        let answer: (response: Response) => void = () => undefined;
        const pending = new Promise<Response>((resolve) => {
            answer = resolve;
        });
        const fetchImpl = renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary()),
            'GET /jobs?task=42': json(200, { jobs: [] }),
            'GET /options': () => pending,
        });
        expect(await screen.findByText('Loading the training options…')).toBeInTheDocument();
        expect(screen.queryByLabelText('Epochs')).not.toBeInTheDocument();
        expect(getButton('Start training')).toBeDisabled();

        act(() => answer(json(200, { options: makeOptionSchema() })));
        expect(await screen.findByLabelText('Epochs')).toHaveValue('50');
        expect(getButton('Start training')).toBeEnabled();
        expect(fetchImpl.calls.map((call) => call.method)).not.toContain('POST');
    });

    it('says why the options did not load, sends nothing, and retries', async () => {
        const user = userEvent.setup();
        let optionsAnswer = json(503, { error: 'the DETR gateway is restarting' });
        const fetchImpl = renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary()),
            'GET /jobs?task=42': json(200, { jobs: [] }),
            'GET /options': () => optionsAnswer.clone(),
        });
        expect(await screen.findByText('The training options could not be loaded, so training cannot start yet.'))
            .toBeInTheDocument();
        expect(screen.getByText(/The DETR service is not available right now \(HTTP 503\)/)).toBeInTheDocument();
        expect(screen.getByText('96 of 120 frames annotated, 309 boxes:')).toBeInTheDocument();
        expect(getButton('Start training')).toBeDisabled();
        expect(fetchImpl.calls.map((call) => call.method)).not.toContain('POST');

        optionsAnswer = json(200, { options: makeOptionSchema() });
        await user.click(getButton('Retry'));
        expect(await screen.findByLabelText('Epochs')).toHaveValue('50');
        expect(fetchImpl.calls.filter((call) => call.route === 'GET /options')).toHaveLength(2);
    });

    it('says so when the gateway does not describe an option the dialog needs', async () => {
        const older = makeOptionSchema().filter((option) => option.name !== 'val_fraction');
        renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary()),
            'GET /jobs?task=42': json(200, { jobs: [] }),
            'GET /options': json(200, { options: older }),
        });
        expect(await screen.findByText(/does not describe the training option 'val_fraction'/)).toBeInTheDocument();
        expect(getButton('Start training')).toBeDisabled();
    });

    it('closes when the browser goes back to the previous page', async () => {
        const onClose = vi.fn();
        renderDialog({ 'GET /tasks/42/summary': json(200, makeSummary()), ...noJobs }, onClose);
        await screen.findByLabelText('Epochs');

        act(() => window.dispatchEvent(new PopStateEvent('popstate')));
        await waitFor(() => expect(onClose).toHaveBeenCalledTimes(1));
    });

    it('resumes showing a running job when reopened', async () => {
        const running = makeJob({ id: 'job-3', epoch: 4 });
        const finished = makeJob({ id: 'job-2', state: 'succeeded', function: 'detr-task-42-v1' });
        const fetchImpl = renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary()),
            'GET /jobs?task=42': json(200, { jobs: [running, finished] }),
            'GET /options': options,
            'GET /jobs/job-3': json(200, running),
        });

        expect(await screen.findByText('Epoch 4 of 10 (step 5 of 20)')).toBeInTheDocument();
        expect(queryButton('Start training')).not.toBeInTheDocument();
        expect(fetchImpl.calls.map((call) => call.method)).not.toContain('POST');
    });

    it('mentions the last finished run on the form', async () => {
        const finished = makeJob({ state: 'succeeded', function: 'detr-task-42-v1', finished: '2026-01-05T11:00:00Z' });
        renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary()),
            'GET /jobs?task=42': json(200, { jobs: [finished] }),
            'GET /options': options,
        });

        expect(await screen.findByText(/Last run succeeded on .* and was published as detr-task-42-v1\./)).toBeInTheDocument();
    });

    it.each([
        ['an ended session', json(401, { error: 'Authentication credentials were not provided.' }), /Log in to CVAT again/],
        ['a missing proxy route', html(200), /route \/detr\/ to the DETR gateway/],
    ])('explains %s and offers a retry', async (_, response, message) => {
        const user = userEvent.setup();
        let summaryAnswer = response;
        const fetchImpl = renderDialog({ 'GET /tasks/42/summary': () => summaryAnswer.clone(), ...noJobs });
        const alert = await screen.findByRole('alert');
        expect(alert).toHaveTextContent(message);

        summaryAnswer = json(200, makeSummary());
        await user.click(getButton('Retry', alert));
        expect(await screen.findByLabelText('Epochs')).toHaveValue('50');
        expect(fetchImpl.calls.filter((call) => call.route === 'GET /tasks/42/summary')).toHaveLength(2);
    });

    it('shows the task’s models one click away, without loading them before', async () => {
        const user = userEvent.setup();
        const fetchImpl = renderDialog({
            'GET /tasks/42/summary': json(200, makeSummary()),
            ...noJobs,
            'GET /models?task=42': json(200, { models: [makeModel()], publish: true }),
        });
        await screen.findByLabelText('Epochs');
        expect(fetchImpl.calls.map((call) => call.route)).not.toContain('GET /models?task=42');

        await user.click(screen.getByText('Models'));
        expect(await screen.findByText('v1: mAP 0.412')).toBeInTheDocument();
        await user.click(screen.getByText('Train'));
        expect(await screen.findByLabelText('Epochs')).toBeInTheDocument();
    });
});
