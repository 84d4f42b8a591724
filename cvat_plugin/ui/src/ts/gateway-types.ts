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
    /** Set instead of `task_id` for a training of a whole project. */
    project_id?: number | null;
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

/** Body of `POST /tasks/{id}/train`: the options the dialog sets (the gateway takes any option of `GET /options`). */
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

/** What a training is of: a CVAT task, or a project (all its tasks; their subsets split them). */
export interface Source {
    kind: 'task' | 'project';
    id: number;
}

export interface ProjectTaskSummary {
    id: number;
    name: string;
    subset: string;
    frames: number;
}

/** A task's summary has `task`; a project's has `project` instead. */
export interface TaskSummary {
    task?: { id: number; name: string; frames: number };
    project?: { id: number; name: string; frames: number; tasks: ProjectTaskSummary[] };
    labels: LabelSummary[];
    annotated_frames: number;
    warnings: string[];
    /** The starting weights this task can train from (the trainer's, and `previous` once it has a model). */
    weights_options: Weights[];
    /** Why the trainer cannot publish (the switch is disabled), or null when it can. */
    publish_unavailable?: string | null;
}

/**
 * One training option of `GET /options`: the gateway's one option schema, with the site's defaults
 * (DETR_TRAIN_DEFAULTS). Numbers have `minimum` and `maximum` (both allowed), closed strings `choices`.
 */
export interface OptionSpec {
    name: string;
    /** job, model (sent in the body's `model` object), train or gateway. */
    section: string;
    type: 'integer' | 'number' | 'boolean' | 'string';
    /** Null where a model preset or the trainer decides. */
    default: unknown;
    minimum?: number;
    maximum?: number;
    choices?: string[];
    help: string;
}

/** One epoch of a job's curves (`GET /jobs/{id}/metrics`); validation values only on evaluated epochs. */
export interface EpochPoint {
    epoch: number;
    time_s?: number;
    train_loss?: number;
    AP?: number;
    AP50?: number;
    AP75?: number;
    /** This epoch's model is the best so far (the one kept). */
    best?: boolean;
}

export type ReportImage = 'curves' | 'pr_curves' | 'confusion_matrix' | 'samples';

export interface ClassAP {
    name: string;
    AP: number | null;
    AP50: number | null;
    /** Validation boxes of the class. */
    boxes: number | null;
}

export interface Publication {
    function: string | null;
    display_name: string | null;
    device: string | null;
    published_at: string | null;
}

/** One trained model version, as `GET /models/{id}` describes it. */
export interface ModelVersion {
    id: string;
    task_id: number | null;
    task_name: string | null;
    version: number | null;
    created: string | null;
    status: string | null;
    /** Where training started: scratch, imagenet, coco, previous, or a checkpoint's file name. */
    weights: string;
    architecture: string;
    backbone: string | null;
    epochs: number | null;
    best_epoch: number | null;
    images: { train: number; val: number } | null;
    metrics: Metrics;
    per_class: ClassAP[];
    threshold: number | null;
    labels: string[];
    /** The Nuclio function serving it, when published. */
    function: string | null;
    published: Publication | null;
    /** The trainer is deploying it now. */
    publishing: boolean;
    /** Why the last publication failed. */
    publish_error: string | null;
    /** The report images it has. */
    report: ReportImage[];
}

/** `GET /models?task=`: newest first, and whether the trainer can publish. */
export interface ModelList {
    models: ModelVersion[];
    publish: boolean;
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

/** The name and frame count of what the summary describes, a task or a project. */
export function summarySubject(summary: TaskSummary): { name: string; frames: number } {
    const subject = summary.task ?? summary.project;
    return { name: subject?.name ?? '', frames: subject?.frames ?? 0 };
}
