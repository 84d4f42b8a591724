/** A finished job: the published model and where to use it, or what went wrong. */
import React from 'react';
import { Button, Result, Space, Typography } from 'antd';

import { formatMetric, plural } from './format';
import { EpochPoint, Job, metricValue } from './gateway-types';
import { MetricsChart } from './metrics-chart';

interface Props {
    job: Job;
    /** The run's curves; shown when there are any. */
    points: EpochPoint[];
    onTrainAgain: () => void;
    onClose: () => void;
}

function Succeeded({ job }: { job: Job }): JSX.Element {
    if (!job.function) {
        return (
            <Typography.Paragraph>
                {`The model was saved${job.model_id ? ` as ${job.model_id}` : ''} but not published, because publishing was off.`}
            </Typography.Paragraph>
        );
    }
    return (
        <>
            <Typography.Paragraph>
                Published as <Typography.Text code copyable>{job.function}</Typography.Text>
            </Typography.Paragraph>
            <Typography.Paragraph>
                To use it, open <Typography.Text strong>Actions → Automatic annotation</Typography.Text> on a task with
                the same labels and choose this model. It is also listed on CVAT’s Models page.
            </Typography.Paragraph>
        </>
    );
}

function summaryLine(job: Job): string {
    const best = metricValue(job.best_metrics, 'AP') ?? metricValue(job.metrics, 'AP');
    const ap50 = metricValue(job.best_metrics, 'AP50') ?? metricValue(job.metrics, 'AP50');
    return `Best validation mAP ${formatMetric(best)} (AP50 ${formatMetric(ap50)}) after ${plural(job.epochs, 'epoch')}.`;
}

function describe(job: Job): { status: 'success' | 'error' | 'warning'; title: string; detail: string } {
    if (job.state === 'succeeded') return { status: 'success', title: 'Training finished', detail: summaryLine(job) };
    if (job.state === 'failed') {
        return {
            status: 'error',
            title: 'Training failed',
            detail: job.error ?? 'The trainer gave no reason; ask a CVAT admin to check the trainer function’s logs.',
        };
    }
    if (job.state === 'cancelled') {
        return {
            status: 'warning',
            title: 'Training cancelled',
            detail: job.started ?
                `Stopped during epoch ${Math.max(job.epoch, 1)} of ${job.epochs}; nothing was published.` :
                'Cancelled before training started; nothing was published.',
        };
    }
    return {
        status: 'warning',
        title: 'Training interrupted',
        detail: 'The trainer stopped while this job ran (for example, it was restarted). It resumes interrupted ' +
            'jobs from their last checkpoint when it starts again; reopen Train DETR later to follow it.',
    };
}

/** Images the run could not use, so that a "succeeded" never hides them. */
function Skipped({ job }: { job: Job }): JSX.Element | null {
    const skipped = job.skipped_images;
    if (!skipped || !skipped.count) return null;
    const more = skipped.count > skipped.first.length ? ', …' : '';
    return (
        <Typography.Paragraph type='warning' className='detr-skipped-images'>
            {`${skipped.count} image${skipped.count === 1 ? ' was' : 's were'} left out because the file is missing ` +
                `or unreadable (${skipped.first.join(', ')}${more}); fix or delete those frames in CVAT and train again.`}
        </Typography.Paragraph>
    );
}

export function JobOutcome({ job, points, onTrainAgain, onClose }: Props): JSX.Element {
    const { status, title, detail } = describe(job);
    return (
        <div className='detr-job-outcome'>
            <Result status={status} title={title} subTitle={detail} style={{ padding: '16px 24px' }}>
                {job.state === 'succeeded' && <Succeeded job={job} />}
                <Skipped job={job} />
            </Result>
            {points.length > 0 && <MetricsChart points={points} epochs={job.epochs} />}
            <Space style={{ width: '100%', justifyContent: 'flex-end' }}>
                <Button onClick={onTrainAgain}>Train again</Button>
                <Button type='primary' onClick={onClose}>Close</Button>
            </Space>
        </div>
    );
}
