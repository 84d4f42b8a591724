/**
 * Shapes of the gateway's JSON (served same-origin under /detr/api). The job object is the
 * trainer's, relayed unchanged by the gateway. Until a job reaches the trainer the gateway answers
 * for it in state 'preparing' (exporting the task, building the training set); once submitted, the
 * gateway answers for that id with the trainer's job, which has an id of its own.
 */

export type JobState = 'preparing' | 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled' | 'interrupted';

export type Weights = 'coco' | 'imagenet' | 'scratch' | 'previous';

/** COCO metrics of one validation (AP, AP50, AP75, APs, APm, APl in 0..1; may hold more keys). */
export type Metrics = Record<string, unknown>;

export interface Job {
    id: string;
    task_id: number | null;
    dataset_id: string;
    state: JobState;
    /** Epoch in progress, 1-based (0 before the first step). */
    epoch: number;
    epochs: number;
    step: number;
    /** Steps per epoch. */
    steps: number;
    /** Whole-run progress, 0..1. */
    progress: number;
    loss: number | null;
    metrics: Metrics;
    best_metrics: Metrics;
    eta_s: number | null;
    error: string | null;
    model_id: string | null;
    /** Name of the published Nuclio function, when the model was published. */
    function: string | null;
    options: Record<string, unknown>;
    /** Images the run left out (file missing or unreadable): how many, and the first few names. */
    skipped_images?: { count: number; first: string[] };
    created: string;
    started: string | null;
    finished: string | null;
}

/** Body of `POST /tasks/{id}/train`; also the summary's `defaults`. */
export interface TrainOptions {
    epochs: number;
    image_size: number;
    weights: Weights;
    /** Share of annotated images held out for validation, 0..1. */
    val_fraction: number;
    publish: boolean;
}

export interface LabelSummary {
    id: number;
    name: string;
    boxes: number;
}

export interface TaskSummary {
    task: { id: number; name: string; frames: number };
    labels: LabelSummary[];
    annotated_frames: number;
    warnings: string[];
    defaults: TrainOptions;
    weights_options: Weights[];
}

/** A job in one of these states holds the task: a second train request gets 409. */
export function isActive(job: Job): boolean {
    return job.state === 'preparing' || job.state === 'queued' || job.state === 'running';
}

/** An interrupted job is resumed by the trainer only when it restarts, so the dialog stops following it. */
export function isFinished(job: Job): boolean {
    return !isActive(job);
}

/** A metric as a number, or null when the job has not reported it yet. */
export function metricValue(metrics: Metrics | null | undefined, name: string): number | null {
    const value = metrics?.[name];
    return typeof value === 'number' && Number.isFinite(value) ? value : null;
}
