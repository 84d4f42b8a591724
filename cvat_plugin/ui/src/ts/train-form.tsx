/**
 * The parameters step: what the task holds, what may go wrong, and the training options, whose limits
 * and defaults come from the gateway (`GET /options`); until they are there, nothing can be started.
 */
import React from 'react';
import { Alert, Button, Form, InputNumber, Select, Space, Spin, Switch, Tag, Typography } from 'antd';
import type { FormRule } from 'antd';

import { GatewayError } from './errors';
import { STATE_LABELS } from './format';
import { Job, summarySubject, TaskSummary, TrainOptions, Weights } from './gateway-types';
import {
    checkEpochs, checkImageSize, checkValPercent, checkWeights, DialogOptions, FormValues, OptionsState, taskDefaults,
    toFormValues, toTrainOptions, WEIGHTS_DESCRIPTIONS,
} from './options';

/** Fewer boxes than this for a label is flagged in the label list (the gateway explains it in a warning). */
const FEW_BOXES = 10;

interface FormProps {
    summary: TaskSummary;
    submitting: boolean;
    error: GatewayError | null;
    onSubmit: (options: TrainOptions) => void;
    /** Any field changed: an error about the last attempt no longer applies. */
    onEdit: () => void;
    onClose: () => void;
}

interface Props extends FormProps {
    lastJob: Job | null;
    /** The gateway's option schema: loading, ready or failed. */
    options: OptionsState;
    onRetryOptions: () => void;
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

export function TrainForm({ lastJob, options, onRetryOptions, ...form }: Props): JSX.Element {
    const { summary, onClose } = form;
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
            {options.kind === 'loading' && (
                <div style={{ textAlign: 'center', padding: 16 }}>
                    <Spin tip='Loading the training options…'><div /></Spin>
                </div>
            )}
            {options.kind === 'error' && (
                <Alert
                    type='error'
                    showIcon
                    style={{ marginBottom: 12 }}
                    message='The training options could not be loaded, so training cannot start yet.'
                    description={options.error.message}
                    action={<Button size='small' onClick={onRetryOptions}>Retry</Button>}
                />
            )}
            {options.kind === 'ready' ?
                <OptionsForm dialog={options.dialog} nothingToTrainOn={nothingToTrainOn} {...form} /> : (
                    <Space style={{ width: '100%', justifyContent: 'flex-end' }}>
                        <Button onClick={onClose}>Close</Button>
                        <Button type='primary' disabled>Start training</Button>
                    </Space>
                )}
        </div>
    );
}

/** The options with the gateway's limits, prefilled with the site's defaults as far as the task can follow them. */
function OptionsForm({ dialog, nothingToTrainOn, summary, submitting, error, onSubmit, onEdit, onClose }:
FormProps & { dialog: DialogOptions; nothingToTrainOn: boolean }): JSX.Element {
    const { epochs, imageSize, valPercent } = dialog;
    return (
        <Form<FormValues>
            name='detr-train'
            layout='vertical'
            initialValues={toFormValues(taskDefaults(dialog.defaults, summary))}
            onFinish={(values) => onSubmit(toTrainOptions(values))}
            onValuesChange={onEdit}
            disabled={submitting}
        >
            <Space size='large' align='start' wrap>
                <Form.Item label='Epochs' name='epochs' rules={[rule((value: number | null) => checkEpochs(value, epochs))]}>
                    <InputNumber min={epochs.min} max={epochs.max} precision={0} style={{ width: 120 }} />
                </Form.Item>
                <Form.Item label='Image size' name='image_size' rules={[rule((value: number | null) => checkImageSize(value, imageSize))]} tooltip='Shorter image side after resizing'>
                    <InputNumber min={imageSize.min} max={imageSize.max} precision={0} step={32} addonAfter='px' style={{ width: 150 }} />
                </Form.Item>
                <Form.Item label='Validation share' name='val_percent' rules={[rule((value: number | null) => checkValPercent(value, valPercent))]}>
                    <InputNumber min={valPercent.min} max={valPercent.max} addonAfter='%' style={{ width: 130 }} />
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
    );
}
