import React from 'react';
import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';

import { createGatewayClient } from '../src/ts/api';
import { EpochPoint } from '../src/ts/gateway-types';
import { MetricsChart } from '../src/ts/metrics-chart';
import { ModelsView } from '../src/ts/models-view';
import { TrainingJob } from '../src/ts/training-job';
import { fakeFetch, json } from './fake-fetch';
import { findButton, getButton, queryButton } from './buttons';
import { makeJob, makeModel } from './fixtures';

const CURVE: EpochPoint[] = [
    { epoch: 1, train_loss: 20.1, AP: 0.05, AP50: 0.12 },
    { epoch: 2, train_loss: 12.4, AP: 0.21, AP50: 0.43, best: true },
    { epoch: 3, train_loss: 9.8 }, // not evaluated this epoch
];

function seriesPoints(name: string): number {
    const group = document.querySelector(`g[data-series="${name}"]`);
    return Number(group?.getAttribute('data-points'));
}

describe('training curves', () => {
    it('draws loss for every epoch and mAP / AP50 for the evaluated ones, on an axis of the planned epochs', () => {
        render(<MetricsChart points={CURVE} epochs={10} />);

        expect(screen.getByRole('img')).toHaveAttribute('aria-label', 'Loss and validation mAP per epoch, 3 of 10 epochs');
        expect([seriesPoints('train_loss'), seriesPoints('AP'), seriesPoints('AP50')]).toEqual([3, 2, 2]);
        expect(screen.getByText('epoch 10')).toBeInTheDocument();
        // Higher AP is higher on the chart (smaller y), loss falls.
        const ys = (name: string) => [...document.querySelectorAll(`g[data-series="${name}"] circle`)]
            .map((circle) => Number(circle.getAttribute('cy')));
        expect(ys('AP')[1]).toBeLessThan(ys('AP')[0]);
        expect(ys('train_loss')[2]).toBeGreaterThan(ys('train_loss')[0]);
    });

    it('says when the curves will appear', () => {
        render(<MetricsChart points={[]} epochs={10} />);
        expect(screen.getByText('The loss and mAP curves appear here after the first epoch.')).toBeInTheDocument();
    });

    it('grows while the job trains: fetched again when a new epoch shows', async () => {
        let epochs = CURVE.slice(0, 1);
        let job = makeJob({ epoch: 2 });
        const fetchImpl = fakeFetch({
            'GET /jobs/job-1': () => json(200, job),
            'GET /jobs/job-1/metrics': () => json(200, { epochs }),
        });
        render(<TrainingJob client={createGatewayClient({ fetchImpl })} job={job} notice={null}
            onTrainAgain={() => undefined} onClose={() => undefined} />);

        await waitFor(() => expect(seriesPoints('train_loss')).toBe(1));
        epochs = CURVE;
        job = makeJob({ epoch: 4, metrics: { AP: 0.21, AP50: 0.43 } });
        await waitFor(() => expect(seriesPoints('train_loss')).toBe(3), { timeout: 4000 });
        expect(seriesPoints('AP')).toBe(2);
    });
});

function renderModels(routes: Parameters<typeof fakeFetch>[0]): ReturnType<typeof fakeFetch> {
    const fetchImpl = fakeFetch(routes);
    render(<ModelsView client={createGatewayClient({ fetchImpl })} source={{ kind: 'task', id: 42 }} />);
    return fetchImpl;
}

const TWO_VERSIONS = {
    models: [
        makeModel({ id: 'task-42-v2', version: 2, metrics: { AP: 0.5, AP50: 0.75, AP75: 0.52 },
            per_class: [{ name: 'car', AP: 0.6, AP50: 0.85, boxes: 40 }, { name: 'person', AP: 0.4, AP50: 0.62, boxes: 12 }] }),
        makeModel({ function: 'detr-task-42-v1', published: { function: 'detr-task-42-v1', display_name: 'DETR · v1', device: 'gpu', published_at: '2026-01-05T11:00:00Z' } }),
    ],
    publish: true,
};

describe('model view', () => {
    it('lists every version with its metrics and shows the newest one in detail with its report images', async () => {
        renderModels({ 'GET /models?task=42': json(200, TWO_VERSIONS) });

        expect(await screen.findByText('v2: mAP 0.500')).toBeInTheDocument();
        expect(screen.getAllByText('detr-task-42-v1').length).toBeGreaterThan(0);
        expect(screen.getAllByText('82 / 14')).toHaveLength(3); // both rows and the details
        const details = document.querySelector('.detr-model-details') as HTMLElement;
        expect(within(details).getByText('0.600')).toBeInTheDocument(); // car AP of v2
        expect(within(details).getByText('0.430')).toBeInTheDocument(); // threshold
        const image = details.querySelector('img') as HTMLImageElement;
        expect(image.getAttribute('src')).toBe('/detr/api/models/task-42-v2/report/samples');
        expect(image.getAttribute('alt')).toBe('Sample predictions of v2');
        expect(getButton('Publish, replacing v1')).toBeEnabled();
    });

    it('publishes a version in place of the served one, then follows it until it is ready', async () => {
        const user = userEvent.setup();
        document.cookie = 'csrftoken=csrf-publish';
        let listing = TWO_VERSIONS;
        const fetchImpl = renderModels({
            'GET /models?task=42': () => json(200, listing),
            'POST /models/task-42-v2/publish': () => {
                listing = { ...TWO_VERSIONS, models: [{ ...TWO_VERSIONS.models[0], publishing: true }, TWO_VERSIONS.models[1]] };
                return json(202, listing.models[0]);
            },
        });
        await user.click(await findButton('Publish, replacing v1'));

        expect((await screen.findAllByText('publishing…')).length).toBeGreaterThan(0);
        const post = fetchImpl.calls.find((call) => call.method === 'POST');
        expect(post?.body).toEqual({ replace: true });
        expect(post?.headers['X-CSRFToken']).toBe('csrf-publish');
        listing = { ...TWO_VERSIONS, models: [{ ...TWO_VERSIONS.models[0], function: 'detr-task-42-v2' }, { ...TWO_VERSIONS.models[1], function: null }] };
        expect((await screen.findAllByText('detr-task-42-v2', {}, { timeout: 5000 })).length).toBeGreaterThan(0);
        expect(getButton('Unpublish')).toBeEnabled();
    });

    it('keeps publishing off with the reason when the trainer cannot publish', async () => {
        renderModels({ 'GET /models?task=42': json(200, { models: [makeModel()], publish: false }) });

        expect(await findButton('Publish')).toBeDisabled();
        expect(queryButton('Unpublish')).not.toBeInTheDocument();
    });

    it('compares two versions side by side, per class', async () => {
        const user = userEvent.setup();
        renderModels({ 'GET /models?task=42': json(200, TWO_VERSIONS) });
        await user.click(await screen.findByLabelText('Compare v2'));
        await user.click(screen.getByLabelText('Compare v1'));

        const table = await waitFor(() => document.querySelector('.detr-model-comparison') as HTMLElement);
        expect(screen.getByText('v1 vs v2')).toBeInTheDocument();
        const row = (name: string) => within(table).getByText(name).closest('tr') as HTMLElement;
        expect(within(row('AP')).getByText('+0.088')).toBeInTheDocument();
        expect(within(row('AP car')).getByText('+0.080')).toBeInTheDocument();
        expect(within(row('AP person')).getByText('0.305')).toBeInTheDocument();
    });

    it('says when the task has no model yet', async () => {
        renderModels({ 'GET /models?task=42': json(200, { models: [], publish: true }) });
        expect(await screen.findByText(/No model has been trained on this task yet/)).toBeInTheDocument();
    });

    it('explains a refused list and offers a retry', async () => {
        renderModels({ 'GET /models?task=42': json(403, { error: 'you cannot see task 42' }) });
        expect(await screen.findByText(/you cannot see task 42/)).toBeInTheDocument();
        expect(getButton('Retry')).toBeInTheDocument();
    });
});
