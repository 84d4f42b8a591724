/**
 * The Train DETR modal, for a task or a project. On open it loads the summary and the jobs: a queued
 * or running job is shown at once (so closing and reopening loses nothing), otherwise the parameters form.
 * The training options' limits and defaults load beside them (`GET /options`); the form waits for them.
 * Its Models tab, one click away, shows the trained versions.
 */
import React, { useCallback, useEffect, useState } from 'react';
import { Alert, Button, Modal, Spin, Tabs } from 'antd';

import { GatewayClient } from './api';
import { asGatewayError, GatewayError } from './errors';
import { isActive, Job, Source, summarySubject, TaskSummary, TrainOptions } from './gateway-types';
import { ModelsView } from './models-view';
import { dialogOptions, OptionsState } from './options';
import { TrainForm } from './train-form';
import { TrainingJob } from './training-job';

type View =
    { kind: 'loading' } |
    { kind: 'load-error'; error: GatewayError } |
    { kind: 'form'; summary: TaskSummary; lastJob: Job | null } |
    { kind: 'job'; job: Job; notice: string | null };

interface Props {
    source: Source;
    client: GatewayClient;
    /** Called once the modal has closed. */
    onClose: () => void;
}

export function TrainDialog({ source, client, onClose }: Props): JSX.Element {
    const [open, setOpen] = useState(true);
    const [view, setView] = useState<View>({ kind: 'loading' });
    const [taskName, setTaskName] = useState<string | null>(null);
    const [loads, setLoads] = useState(0);
    const [options, setOptions] = useState<OptionsState>({ kind: 'loading' });
    const [optionLoads, setOptionLoads] = useState(0);
    const [submitting, setSubmitting] = useState(false);
    const [startError, setStartError] = useState<GatewayError | null>(null);
    const [tab, setTab] = useState<'train' | 'models'>('train');

    useEffect(() => {
        let live = true;
        setView({ kind: 'loading' });
        Promise.all([client.getSummary(source), client.listJobs(source)]).then(([summary, jobs]) => {
            if (!live) return;
            setTaskName(summarySubject(summary).name);
            const active = jobs.find(isActive);
            setView(active ?
                { kind: 'job', job: active, notice: null } :
                { kind: 'form', summary, lastJob: jobs[0] ?? null });
        }).catch((error) => {
            if (live) setView({ kind: 'load-error', error: asGatewayError(error) });
        });
        return () => {
            live = false;
        };
    }, [client, source, loads]);

    useEffect(() => {
        let live = true;
        setOptions({ kind: 'loading' });
        client.getOptions().then((schema) => {
            if (live) setOptions({ kind: 'ready', dialog: dialogOptions(schema) });
        }).catch((error) => {
            if (live) setOptions({ kind: 'error', error: asGatewayError(error) });
        });
        return () => {
            live = false;
        };
    }, [client, optionLoads]);

    const reload = useCallback(() => {
        setStartError(null);
        setLoads((value) => value + 1);
    }, []);
    const reloadOptions = useCallback(() => setOptionLoads((value) => value + 1), []);
    const close = useCallback(() => setOpen(false), []);
    const clearStartError = useCallback(() => setStartError(null), []);

    // The browser's Back (or Forward) leaves the task's page: the dialog belongs to that page.
    useEffect(() => {
        window.addEventListener('popstate', close);
        return () => window.removeEventListener('popstate', close);
    }, [close]);

    const start = async (options: TrainOptions): Promise<void> => {
        setSubmitting(true);
        setStartError(null);
        try {
            setView({ kind: 'job', job: await client.startTraining(source, options), notice: null });
        } catch (caught) {
            const error = asGatewayError(caught);
            if (error.kind === 'conflict' && error.job) {
                setView({ kind: 'job', job: error.job, notice: `${error.message} Showing that job instead.` });
            } else {
                setStartError(error);
            }
        } finally {
            setSubmitting(false);
        }
    };

    let body: JSX.Element;
    if (view.kind === 'loading') {
        body = <div style={{ textAlign: 'center', padding: 32 }}><Spin tip='Loading task…'><div /></Spin></div>;
    } else if (view.kind === 'load-error') {
        body = (
            <Alert
                type='error'
                showIcon
                message={view.error.message}
                action={<Button size='small' onClick={reload}>Retry</Button>}
            />
        );
    } else if (view.kind === 'form') {
        body = (
            <TrainForm
                summary={view.summary}
                lastJob={view.lastJob}
                options={options}
                onRetryOptions={reloadOptions}
                submitting={submitting}
                error={startError}
                onSubmit={start}
                onEdit={clearStartError}
                onClose={close}
            />
        );
    } else {
        body = (
            <TrainingJob
                key={view.job.id}
                client={client}
                job={view.job}
                notice={view.notice}
                onTrainAgain={reload}
                onClose={close}
            />
        );
    }

    return (
        <Modal
            open={open}
            title={taskName ? `Train DETR: ${taskName}` : `Train DETR: ${source.kind} #${source.id}`}
            footer={null}
            width={tab === 'models' ? 820 : 640}
            maskClosable={false}
            destroyOnClose
            onCancel={close}
            afterClose={onClose}
        >
            <Tabs
                activeKey={tab}
                onChange={(key) => setTab(key as 'train' | 'models')}
                destroyInactiveTabPane
                items={[
                    { key: 'train', label: 'Train', children: body },
                    { key: 'models', label: 'Models', children: <ModelsView client={client} source={source} /> },
                ]}
            />
        </Modal>
    );
}
