/** Gateway payloads as the Gateway API and Job contracts define them, with overridable fields. */
import { Job, ModelVersion, OptionSpec, TaskSummary } from '../src/ts/gateway-types';

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
        weights_options: ['coco', 'imagenet', 'scratch', 'previous'],
        ...overrides,
    };
}

/** `GET /options` as the gateway answers it: the dialog's options, and two it does not show. */
export function makeOptionSchema(overrides: Record<string, Partial<OptionSpec>> = {}): OptionSpec[] {
    const options: OptionSpec[] = [
        { name: 'weights', section: 'job', type: 'string', default: 'coco', choices: ['coco', 'imagenet', 'scratch', 'previous'], help: 'Starting point.' },
        { name: 'num_queries', section: 'model', type: 'integer', default: null, minimum: 1, maximum: 3000, help: 'Object queries.' },
        { name: 'epochs', section: 'train', type: 'integer', default: 50, minimum: 1, maximum: 10000, help: 'Passes over the training images.' },
        { name: 'image_size', section: 'train', type: 'integer', default: 800, minimum: 32, maximum: 4096, help: 'Shortest side.' },
        { name: 'lr', section: 'train', type: 'number', default: 0.0001, minimum: 1e-7, maximum: 1, help: 'Learning rate.' },
        { name: 'val_fraction', section: 'gateway', type: 'number', default: 0.15, minimum: 0.01, maximum: 0.5, help: 'Validation share.' },
        { name: 'publish', section: 'gateway', type: 'boolean', default: true, help: 'Serve the best model.' },
    ];
    return options.map((option) => ({ ...option, ...overrides[option.name] }));
}

export function makeModel(overrides: Partial<ModelVersion> = {}): ModelVersion {
    return {
        id: 'task-42-v1',
        task_id: 42,
        task_name: 'street scenes',
        version: 1,
        created: '2026-01-05T10:20:00Z',
        status: 'completed',
        weights: 'scratch',
        architecture: 'fast',
        backbone: 'resnet18',
        epochs: 50,
        best_epoch: 47,
        images: { train: 82, val: 14 },
        metrics: { AP: 0.4123, AP50: 0.6551, AP75: 0.4402 },
        per_class: [
            { name: 'car', AP: 0.52, AP50: 0.8, boxes: 40 },
            { name: 'person', AP: 0.3046, AP50: 0.51, boxes: 12 },
        ],
        threshold: 0.43,
        labels: ['car', 'person'],
        function: null,
        published: null,
        publishing: false,
        publish_error: null,
        report: ['curves', 'pr_curves', 'confusion_matrix', 'samples'],
        ...overrides,
    };
}
