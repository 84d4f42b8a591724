/** The parameters step: what the task holds, what may go wrong, and the training options. */
import React from 'react';
import { Alert, Button, Form, InputNumber, Select, Space, Switch, Tag, Typography } from 'antd';
import type { FormRule } from 'antd';

import { GatewayError } from './errors';
import { STATE_LABELS } from './format';
import { Job, summarySubject, TaskSummary, TrainOptions, Weights } from './gateway-types';
import {
    checkEpochs, checkImageSize, checkValPercent, checkWeights, FormValues, LIMITS, toFormValues, toTrainOptions,
    WEIGHTS_DESCRIPTIONS,
} from './options';

/** Fewer boxes than this for a label is flagged in the label list (the gateway explains it in a warning). */
const FEW_BOXES = 10;

interface Props {
    summary: TaskSummary;
    lastJob: Job | null;
    submitting: boolean;
    error: GatewayError | null;
    onSubmit: (options: TrainOptions) => void;
    /** Any field changed: an error about the last attempt no longer applies. */
    onEdit: () => void;
    onClose: () => void;
}

/** antd validator from one of our checks, so the form shows the check's message under the field. */
function rule<T>(check: (value: T) => string | null): FormRule {
    return {
        validator: (_, value: T) => {
            const problem = check(value);
            return problem ? Promise.reject(new Error(problem)) : Promise.resolve();
        },
    };
}

function describeLastJob(job: Job): string {
    const when = job.finished ? ` on ${new Date(job.finished).toLocaleString()}` : '';
    if (job.state === 'succeeded') {
        return job.function ?
            `Last run succeeded${when} and was published as ${job.function}.` :
            `Last run succeeded${when} (not published).`;
    }
    if (job.state === 'failed') return `Last run failed${when}: ${job.error ?? 'no reason given'}`;
    return `Last run: ${STATE_LABELS[job.state].toLowerCase()}${when}.`;
}

export function TrainForm({ summary, lastJob, submitting, error, onSubmit, onEdit, onClose }: Props): JSX.Element {
    const totalBoxes = summary.labels.reduce((sum, label) => sum + label.boxes, 0);
    const nothingToTrainOn = totalBoxes === 0;

    return (
        <div className='detr-train-form'>
            <Typography.Paragraph type='secondary'>
                {`${summary.annotated_frames} of ${summarySubject(summary).frames} frames annotated, ${totalBoxes} boxes:`}
            </Typography.Paragraph>
            <div className='detr-label-counts' style={{ marginBottom: 12 }}>
                {summary.labels.map((label) => (
                    <Tag key={label.id} color={label.boxes === 0 ? 'red' : label.boxes < FEW_BOXES ? 'orange' : undefined}>
                        {`${label.name}: ${label.boxes}`}
                    </Tag>
                ))}
            </div>
            {nothingToTrainOn && (
                <Alert
                    type='error'
                    showIcon
                    style={{ marginBottom: 12 }}
                    message='Nothing to train on yet'
                    description={`This ${summary.project ? 'project' : 'task'} has no boxes. Draw boxes (polygons and masks count too) in CVAT, save, and open Train DETR again.`}
                />
            )}
            {summary.project && (
                <Typography.Paragraph type='secondary'>
                    {summary.project.tasks.map((task) => `${task.name}: ${task.subset || 'no subset'}`).join(' · ')}
                    {'. Tasks in the Train and Validation subsets are used as such, Test is held out, the others are split by the validation share.'}
                </Typography.Paragraph>
            )}
            {summary.warnings.length > 0 && (
                <Alert
                    type='warning'
                    showIcon
                    style={{ marginBottom: 12 }}
                    message='Check before training'
                    description={(
                        <ul style={{ margin: 0, paddingLeft: 18 }}>
                            {summary.warnings.map((warning) => <li key={warning}>{warning}</li>)}
                        </ul>
                    )}
                />
            )}
            {lastJob && (
                <Alert type='info' style={{ marginBottom: 12 }} message={describeLastJob(lastJob)} />
            )}
            <Form<FormValues>
                name='detr-train'
                layout='vertical'
                initialValues={toFormValues(summary.defaults)}
                onFinish={(values) => onSubmit(toTrainOptions(values))}
                onValuesChange={onEdit}
                disabled={submitting}
            >
                <Space size='large' align='start' wrap>
                    <Form.Item label='Epochs' name='epochs' rules={[rule(checkEpochs)]}>
                        <InputNumber min={LIMITS.epochs.min} max={LIMITS.epochs.max} precision={0} style={{ width: 120 }} />
                    </Form.Item>
                    <Form.Item label='Image size' name='image_size' rules={[rule(checkImageSize)]} tooltip='Shorter image side after resizing'>
                        <InputNumber min={LIMITS.imageSize.min} max={LIMITS.imageSize.max} precision={0} step={32} addonAfter='px' style={{ width: 150 }} />
                    </Form.Item>
                    <Form.Item label='Validation share' name='val_percent' rules={[rule(checkValPercent)]}>
                        <InputNumber min={LIMITS.valPercent.min} max={LIMITS.valPercent.max} addonAfter='%' style={{ width: 130 }} />
                    </Form.Item>
                </Space>
                <Form.Item
                    label='Starting weights'
                    name='weights'
                    rules={[rule((value: Weights | null) => checkWeights(value, summary.weights_options))]}
                >
                    <Select<Weights>
                        options={summary.weights_options.map((weights) => ({
                            value: weights,
                            label: `${weights}: ${WEIGHTS_DESCRIPTIONS[weights] ?? ''}`,
                        }))}
                    />
                </Form.Item>
                <Form.Item
                    label='Publish when done'
                    name='publish'
                    valuePropName='checked'
                    extra={summary.publish_unavailable ??
                        'Deploys the best model as a CVAT auto-annotation model with these labels.'}
                >
                    <Switch disabled={Boolean(summary.publish_unavailable)} />
                </Form.Item>
                {error && <Alert type='error' showIcon style={{ marginBottom: 12 }} message={error.message} />}
                <Space style={{ width: '100%', justifyContent: 'flex-end' }}>
                    {/* The form's `disabled` reaches every antd control in it; Close stays usable. */}
                    <Button onClick={onClose} disabled={false}>Close</Button>
                    <Button type='primary' htmlType='submit' loading={submitting} disabled={nothingToTrainOn}>
                        Start training
                    </Button>
                </Space>
            </Form>
        </div>
    );
}
