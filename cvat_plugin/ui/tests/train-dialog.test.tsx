import React from 'react';
import { act, render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';

import { createGatewayClient } from '../src/ts/api';
import { TrainDialog } from '../src/ts/train-dialog';
import { fakeFetch, html, json } from './fake-fetch';
import { findButton, getButton, queryButton } from './buttons';
import { makeJob, makeModel, makeSummary } from './fixtures';

function renderDialog(routes: Parameters<typeof fakeFetch>[0], onClose = () => undefined): ReturnType<typeof fakeFetch> {
    const fetchImpl = fakeFetch(routes);
    render(<TrainDialog source={{ kind: 'task', id: 42 }} client={createGatewayClient({ fetchImpl })} onClose={onClose} />);
    return fetchImpl;
}

const noJobs = { 'GET /jobs?task=42': json(200, { jobs: [] }) };

describe('Train DETR dialog', () => {
    it('prefills the form from the summary defaults and shows its warnings before starting', async () => {
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

        expect(await screen.findByText('Enter the number of epochs: a whole number from 1 to 1000.')).toBeInTheDocument();
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
            'GET /tasks/42/summary': json(200, makeSummary({
                defaults: { epochs: 50, image_size: 800, weights: 'coco', val_fraction: 0.15, publish: false },
                publish_unavailable: reason,
            })),
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
