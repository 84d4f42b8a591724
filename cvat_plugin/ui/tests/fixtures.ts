/** Gateway payloads as the Gateway API and Job contracts define them, with overridable fields. */
import { Job, TaskSummary } from '../src/ts/gateway-types';

export function makeJob(overrides: Partial<Job> = {}): Job {
    return {
        id: 'job-1',
        task_id: 42,
        dataset_id: 'ds-1',
        state: 'running',
        epoch: 3,
        epochs: 10,
        step: 5,
        steps: 20,
        progress: 0.225,
        loss: 0.8421,
        metrics: { AP: 0.4123, AP50: 0.6551 },
        best_metrics: { AP: 0.4123, AP50: 0.6551 },
        eta_s: 725,
        error: null,
        model_id: null,
        function: null,
        options: { epochs: 10, image_size: 800, weights: 'coco', val_fraction: 0.15, publish: true },
        created: '2026-01-05T10:00:00Z',
        started: '2026-01-05T10:00:02Z',
        finished: null,
        ...overrides,
    };
}

export function makeSummary(overrides: Partial<TaskSummary> = {}): TaskSummary {
    return {
        task: { id: 42, name: 'street scenes', frames: 120 },
        labels: [
            { id: 1, name: 'car', boxes: 230 },
            { id: 2, name: 'person', boxes: 75 },
            { id: 3, name: 'bicycle', boxes: 4 },
        ],
        annotated_frames: 96,
        warnings: ["label 'bicycle' has only 4 boxes; the model will hardly learn it (aim for 10 or more)"],
        defaults: { epochs: 50, image_size: 800, weights: 'coco', val_fraction: 0.15, publish: true },
        weights_options: ['coco', 'imagenet', 'scratch', 'previous'],
        ...overrides,
    };
}
