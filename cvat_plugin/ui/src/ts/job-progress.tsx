/** A queued or running job: phase, progress bar, loss, validation mAP, their curves, time left, and Cancel. */
import React from 'react';
import { Alert, Button, Descriptions, Popconfirm, Progress, Space, Tag, Typography } from 'antd';

import { GatewayError } from './errors';
import { describePhase, formatEta, formatLoss, formatMetric, STATE_LABELS } from './format';
import { EpochPoint, Job, metricValue } from './gateway-types';
import { MetricsChart } from './metrics-chart';

const WAITING: Partial<Record<Job['state'], string>> = {
    preparing: 'estimated once training starts',
    queued: 'waiting for the trainer',
};

interface Props {
    job: Job;
    /** The job's curves so far. */
    points: EpochPoint[];
    /** Shown above the progress, e.g. why this job is shown instead of a new one. */
    notice: string | null;
    pollError: GatewayError | null;
    polling: boolean;
    cancelling: boolean;
    cancelError: GatewayError | null;
    onCancel: () => void;
    onCheckAgain: () => void;
    onClose: () => void;
}

export function JobProgress({
    job, points, notice, pollError, polling, cancelling, cancelError, onCancel, onCheckAgain, onClose,
}: Props): JSX.Element {
    const running = job.state === 'running';
    const percent = Math.floor(Math.min(Math.max(job.progress, 0), 1) * 100);

    return (
        <div className='detr-job-progress'>
            {notice && <Alert type='info' showIcon style={{ marginBottom: 12 }} message={notice} />}
            <Space style={{ marginBottom: 4 }}>
                <Tag color={running ? 'processing' : 'default'}>{STATE_LABELS[job.state]}</Tag>
                <Typography.Text strong>{describePhase(job)}</Typography.Text>
            </Space>
            <Progress percent={percent} status={running ? 'active' : 'normal'} />
            <Descriptions
                size='small'
                column={2}
                style={{ marginTop: 8 }}
                items={[
                    { key: 'loss', label: 'Loss', children: formatLoss(job.loss) },
                    { key: 'eta', label: 'Time left', children: running ? formatEta(job.eta_s) : WAITING[job.state] ?? '—' },
                    { key: 'map', label: 'mAP (val)', children: formatMetric(metricValue(job.metrics, 'AP')) },
                    { key: 'ap50', label: 'AP50 (val)', children: formatMetric(metricValue(job.metrics, 'AP50')) },
                    { key: 'best', label: 'Best mAP', children: formatMetric(metricValue(job.best_metrics, 'AP')) },
                    { key: 'job', label: 'Job', children: <Typography.Text code>{job.id}</Typography.Text> },
                ]}
            />
            {job.state === 'running' && <MetricsChart points={points} epochs={job.epochs} />}
            {pollError && (
                <Alert
                    type={polling ? 'warning' : 'error'}
                    showIcon
                    style={{ marginTop: 12 }}
                    message={polling ? `${pollError.message} Retrying automatically.` : pollError.message}
                    action={polling ? undefined : <Button size='small' onClick={onCheckAgain}>Check again</Button>}
                />
            )}
            {cancelError && <Alert type='error' showIcon style={{ marginTop: 12 }} message={cancelError.message} />}
            <Typography.Paragraph type='secondary' style={{ marginTop: 12 }}>
                You can close this window: training continues on the server, and Train DETR shows it again when reopened.
            </Typography.Paragraph>
            <Space style={{ width: '100%', justifyContent: 'flex-end' }}>
                <Popconfirm
                    title='Stop this training?'
                    description='The run stops at the next step and nothing is published.'
                    okText='Stop training'
                    cancelText='Keep training'
                    onConfirm={onCancel}
                >
                    <Button danger loading={cancelling}>Cancel training</Button>
                </Popconfirm>
                <Button onClick={onClose}>Close</Button>
            </Space>
        </div>
    );
}
