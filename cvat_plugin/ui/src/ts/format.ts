/** Numbers of a training job in words, for the progress view. */
import { Job, JobState } from './gateway-types';

export const STATE_LABELS: Record<JobState, string> = {
    preparing: 'Preparing',
    queued: 'Queued',
    running: 'Training',
    succeeded: 'Succeeded',
    failed: 'Failed',
    cancelled: 'Cancelled',
    interrupted: 'Interrupted',
};

/** "1 epoch", "2 epochs". */
export function plural(count: number, unit: string): string {
    return `${count} ${unit}${count === 1 ? '' : 's'}`;
}

/** "less than a minute left", "about 12 minutes left", "about 1 hour 20 minutes left". */
export function formatEta(seconds: number | null | undefined): string {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) {
        return 'estimating the time left';
    }
    if (seconds < 60) return 'less than a minute left';
    const minutes = Math.round(seconds / 60);
    if (minutes < 60) return `about ${plural(minutes, 'minute')} left`;
    const hours = Math.floor(minutes / 60);
    if (hours < 24) {
        const rest = minutes % 60;
        return `about ${plural(hours, 'hour')}${rest ? ` ${plural(rest, 'minute')}` : ''} left`;
    }
    const days = Math.floor(hours / 24);
    const restHours = hours % 24;
    return `about ${plural(days, 'day')}${restHours ? ` ${plural(restHours, 'hour')}` : ''} left`;
}

/** COCO AP values are 0..1; three decimals, as pycocotools and Ultralytics print them. */
export function formatMetric(value: number | null): string {
    return value === null ? '—' : value.toFixed(3);
}

export function formatLoss(value: number | null): string {
    return value === null || !Number.isFinite(value) ? '—' : value.toFixed(3);
}

/** "Epoch 3 of 50" while running; the queue position is unknown, so queued says only that. */
export function describePhase(job: Job): string {
    if (job.state === 'preparing') return 'Preparing: exporting the task from CVAT and building the training set';
    if (job.state === 'queued') return 'Queued: waiting for the trainer to start this job';
    if (job.state === 'running') {
        const epoch = Math.min(Math.max(job.epoch, 1), job.epochs);
        const steps = job.steps > 0 ? ` (step ${Math.min(job.step, job.steps)} of ${job.steps})` : '';
        return `Epoch ${epoch} of ${job.epochs}${steps}`;
    }
    return STATE_LABELS[job.state];
}
