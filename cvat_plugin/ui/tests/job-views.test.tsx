import React from 'react';
import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';

import { createGatewayClient } from '../src/ts/api';
import { Job } from '../src/ts/gateway-types';
import { TrainingJob } from '../src/ts/training-job';
import { fakeFetch, json } from './fake-fetch';
import { findButton, getButton, queryButton } from './buttons';
import { makeJob } from './fixtures';

function renderJob(job: Job, routes: Parameters<typeof fakeFetch>[0] = {}): ReturnType<typeof fakeFetch> {
    const fetchImpl = fakeFetch({ [`GET /jobs/${job.id}`]: json(200, job), ...routes });
    render(
        <TrainingJob
            client={createGatewayClient({ fetchImpl })}
            job={job}
            notice={null}
            onTrainAgain={() => undefined}
            onClose={() => undefined}
        />,
    );
    return fetchImpl;
}

describe('training progress', () => {
    it('shows a queued job as waiting, at 0 %', () => {
        renderJob(makeJob({ state: 'queued', epoch: 0, step: 0, progress: 0, loss: null, metrics: {}, eta_s: null }));

        expect(screen.getByText('Queued: waiting for the trainer to start this job')).toBeInTheDocument();
        expect(screen.getByRole('progressbar')).toHaveAttribute('aria-valuenow', '0');
        expect(screen.getByText('waiting for the trainer')).toBeInTheDocument();
        expect(getButton('Cancel training')).toBeInTheDocument();
    });

    it('shows a job being prepared (export and training set) as active, with Cancel', () => {
        renderJob(makeJob({ state: 'preparing', epoch: 0, step: 0, progress: 0, loss: null, metrics: {}, eta_s: null, started: null }));

        expect(screen.getByText('Preparing: exporting the task from CVAT and building the training set')).toBeInTheDocument();
        expect(screen.getByText('estimated once training starts')).toBeInTheDocument();
        expect(getButton('Cancel training')).toBeInTheDocument();
    });

    it('shows epoch n of N, the bar, loss, mAP, AP50 and the time left in words', () => {
        renderJob(makeJob());

        expect(screen.getByText('Epoch 3 of 10 (step 5 of 20)')).toBeInTheDocument();
        expect(screen.getByRole('progressbar')).toHaveAttribute('aria-valuenow', '22');
        expect(screen.getByText('0.842')).toBeInTheDocument();
        expect(screen.getAllByText('0.412')).toHaveLength(2); // last and best mAP
        expect(screen.getByText('0.655')).toBeInTheDocument();
        expect(screen.getByText('about 12 minutes left')).toBeInTheDocument();
    });

    it('names the published function and points to Automatic annotation on success', () => {
        renderJob(makeJob({ state: 'succeeded', progress: 1, function: 'detr-task-42-v2', best_metrics: { AP: 0.5, AP50: 0.75 } }));

        expect(screen.getByText('Training finished')).toBeInTheDocument();
        expect(screen.getByText('Best validation mAP 0.500 (AP50 0.750) after 10 epochs.')).toBeInTheDocument();
        expect(screen.getByText('detr-task-42-v2')).toBeInTheDocument();
        expect(screen.getByText('Actions → Automatic annotation')).toBeInTheDocument();
        expect(queryButton('Cancel training')).not.toBeInTheDocument();
    });

    it('counts a one-epoch run in the singular', () => {
        renderJob(makeJob({ state: 'succeeded', epoch: 1, epochs: 1, progress: 1, best_metrics: { AP: 0.5, AP50: 0.75 } }));

        expect(screen.getByText('Best validation mAP 0.500 (AP50 0.750) after 1 epoch.')).toBeInTheDocument();
    });

    it('lists the images a succeeded run left out', () => {
        renderJob(makeJob({
            state: 'succeeded', function: 'detr-task-42-v2',
            skipped_images: { count: 7, first: ['frame_000003.jpg', 'frame_000005.jpg'] },
        }));

        expect(screen.getByText('7 images were left out because the file is missing or unreadable ' +
            '(frame_000003.jpg, frame_000005.jpg, …); fix or delete those frames in CVAT and train again.')).toBeInTheDocument();
    });

    it('says so when the model was not published', () => {
        renderJob(makeJob({ state: 'succeeded', function: null, model_id: 'm-9' }));

        expect(screen.getByText('The model was saved as m-9 but not published, because publishing was off.')).toBeInTheDocument();
    });

    it.each([
        [makeJob({ state: 'failed', error: 'CUDA out of memory: lower the image size' }), 'Training failed', 'CUDA out of memory: lower the image size'],
        [makeJob({ state: 'failed', error: null }), 'Training failed', /ask a CVAT admin to check the trainer/],
        [makeJob({ state: 'cancelled', epoch: 4 }), 'Training cancelled', 'Stopped during epoch 4 of 10; nothing was published.'],
        [makeJob({ state: 'cancelled', epoch: 0, started: null }), 'Training cancelled', 'Cancelled before training started; nothing was published.'],
        [makeJob({ state: 'failed', id: 'prep-1', started: null, error: 'CVAT failed to export task 42: No space left on device' }),
            'Training failed', 'CVAT failed to export task 42: No space left on device'],
        [makeJob({ state: 'interrupted' }), 'Training interrupted', /resumes interrupted jobs from their last checkpoint/],
    ])('explains a %# ended job in words', (job, title, detail) => {
        renderJob(job);

        expect(screen.getByText(title)).toBeInTheDocument();
        expect(screen.getByText(detail)).toBeInTheDocument();
        expect(getButton('Train again')).toBeInTheDocument();
    });

    it('cancels after confirmation and shows the cancelled job', async () => {
        const user = userEvent.setup();
        document.cookie = 'csrftoken=csrf-cancel';
        const fetchImpl = renderJob(makeJob(), {
            'POST /jobs/job-1/cancel': json(200, makeJob({ state: 'cancelled', epoch: 3 })),
        });
        await user.click(getButton('Cancel training'));
        await user.click(await findButton('Stop training'));

        expect(await screen.findByText('Training cancelled')).toBeInTheDocument();
        const cancel = fetchImpl.calls.find((call) => call.method === 'POST');
        expect(cancel?.route).toBe('POST /jobs/job-1/cancel');
        expect(cancel?.headers['X-CSRFToken']).toBe('csrf-cancel');
    });

    it('keeps the job on screen and explains a refused cancel', async () => {
        const user = userEvent.setup();
        renderJob(makeJob(), { 'POST /jobs/job-1/cancel': json(403, { error: 'only the job owner may cancel it' }) });
        await user.click(getButton('Cancel training'));
        await user.click(await findButton('Stop training'));

        expect(await screen.findByText(/HTTP 403\): only the job owner may cancel it/)).toBeInTheDocument();
        expect(screen.getByText('Epoch 3 of 10 (step 5 of 20)')).toBeInTheDocument();
    });

    it('says when it lost contact and that it keeps retrying', async () => {
        const job = makeJob();
        const fetchImpl = vi.fn().mockRejectedValue(new TypeError('Failed to fetch'));
        render(<TrainingJob client={createGatewayClient({ fetchImpl })} job={job} notice={null} onTrainAgain={() => undefined} onClose={() => undefined} />);

        const alert = await screen.findByRole('alert', {}, { timeout: 3000 });
        expect(alert).toHaveTextContent(/Could not reach the DETR service .* Retrying automatically\./);
        expect(queryButton('Check again', alert)).not.toBeInTheDocument();
    });

    it('stops polling on an ended session and offers to check again', async () => {
        renderJob(makeJob(), { 'GET /jobs/job-1': json(401, { error: 'not logged in' }) });

        const alert = await screen.findByRole('alert', {}, { timeout: 3000 });
        expect(alert).toHaveTextContent('Your CVAT session has ended (HTTP 401). Log in to CVAT again, then reopen this dialog.');
        expect(getButton('Check again', alert)).toBeInTheDocument();
    });
});
