/**
 * The model versions of a task or project: a table of every version (date, start, epochs, images, AP, AP50, AP75,
 * where it is published), one version's details (per-class AP, threshold, report images served by
 * the gateway), publish / replace / unpublish, and a side-by-side of two versions.
 */
import React, { useCallback, useEffect, useState } from 'react';
import {
    Alert, Button, Descriptions, Image, Popconfirm, Space, Spin, Table, Tabs, Tag, Tooltip, Typography,
} from 'antd';
import type { TableColumnsType } from 'antd';

import { GatewayClient } from './api';
import { asGatewayError, GatewayError } from './errors';
import { formatMetric } from './format';
import { metricValue, ModelList, ModelVersion, ReportImage, Source } from './gateway-types';

/** How often the list is read again while a version is being published. */
export const PUBLISH_POLL_MS = 2000;

export const REPORT_TITLES: Record<ReportImage, string> = {
    samples: 'Sample predictions',
    curves: 'Curves',
    pr_curves: 'PR curves',
    confusion_matrix: 'Confusion matrix',
};

const CANNOT_PUBLISH = 'The trainer cannot publish models: a CVAT admin needs to set NUCLIO_DASHBOARD_URL in the ' +
    'detr-trainer function.';

export function versionName(model: ModelVersion): string {
    return model.version !== null ? `v${model.version}` : model.id;
}

function formatDate(value: string | null): string {
    return value ? new Date(value).toLocaleString() : '—';
}

function formatImages(model: ModelVersion): string {
    return model.images ? `${model.images.train} / ${model.images.val}` : '—';
}

function PublishedTag({ model }: { model: ModelVersion }): JSX.Element {
    if (model.publishing) return <Tag color='processing'>publishing…</Tag>;
    if (model.function) return <Tag color='success'>{model.function}</Tag>;
    return <Typography.Text type='secondary'>—</Typography.Text>;
}

interface ActionsProps {
    model: ModelVersion;
    served: ModelVersion | null;
    canPublish: boolean;
    busy: boolean;
    onPublish: (replace: boolean) => void;
    onUnpublish: () => void;
}

/** Publish (or replace the served version with this one) and unpublish, disabled with the reason. */
function PublishActions({ model, served, canPublish, busy, onPublish, onUnpublish }: ActionsProps): JSX.Element {
    const reason = !canPublish ? CANNOT_PUBLISH : model.publishing ? 'This version is being published.' : null;
    const wrap = (button: JSX.Element): JSX.Element => (reason ? <Tooltip title={reason}>{button}</Tooltip> : button);
    if (model.function) {
        return wrap(
            <Popconfirm
                title={`Unpublish ${versionName(model)}?`}
                description={`CVAT's Automatic annotation stops offering ${model.function}; the model stays here.`}
                okText='Unpublish'
                cancelText='Keep it'
                onConfirm={onUnpublish}
                disabled={reason !== null}
            >
                <Button danger loading={busy} disabled={reason !== null}>Unpublish</Button>
            </Popconfirm>,
        );
    }
    return (
        <Space>
            {served && wrap(
                <Button type='primary' loading={busy} disabled={reason !== null} onClick={() => onPublish(true)}>
                    {`Publish, replacing ${versionName(served)}`}
                </Button>,
            )}
            {wrap(
                <Button type={served ? 'default' : 'primary'} loading={busy} disabled={reason !== null}
                    onClick={() => onPublish(false)}>
                    {served ? 'Publish beside it' : 'Publish'}
                </Button>,
            )}
        </Space>
    );
}

interface DetailsProps {
    client: GatewayClient;
    model: ModelVersion;
}

/** One version: what it was trained on, its per-class AP and its report images. */
export function ModelDetails({ client, model }: DetailsProps): JSX.Element {
    return (
        <div className='detr-model-details'>
            <Descriptions
                size='small'
                column={3}
                items={[
                    { key: 'start', label: 'Started from', children: model.weights },
                    { key: 'arch', label: 'Model', children: `${model.architecture} (${model.backbone ?? '—'})` },
                    { key: 'epochs', label: 'Epochs', children: `${model.epochs ?? '—'} (best ${model.best_epoch ?? '—'})` },
                    { key: 'images', label: 'Images train / val', children: formatImages(model) },
                    { key: 'threshold', label: 'Threshold', children: formatMetric(model.threshold) },
                    { key: 'published', label: 'Published', children: <PublishedTag model={model} /> },
                ]}
            />
            {model.publish_error && <Alert type='error' showIcon style={{ margin: '8px 0' }} message={model.publish_error} />}
            <Table
                size='small'
                pagination={false}
                rowKey='name'
                style={{ margin: '8px 0' }}
                dataSource={model.per_class}
                columns={[
                    { title: 'Label', dataIndex: 'name' },
                    { title: 'AP', dataIndex: 'AP', render: (value: number | null) => formatMetric(value) },
                    { title: 'AP50', dataIndex: 'AP50', render: (value: number | null) => formatMetric(value) },
                    { title: 'Val boxes', dataIndex: 'boxes', render: (value: number | null) => value ?? '—' },
                ]}
            />
            {model.report.length > 0 ? (
                <Tabs
                    size='small'
                    items={(Object.keys(REPORT_TITLES) as ReportImage[]).filter((name) => model.report.includes(name))
                        .map((name) => ({
                            key: name,
                            label: REPORT_TITLES[name],
                            children: (
                                <Image
                                    src={client.reportImageUrl(model.id, name)}
                                    alt={`${REPORT_TITLES[name]} of ${versionName(model)}`}
                                    width='100%'
                                />
                            ),
                        }))}
                />
            ) : (
                <Typography.Paragraph type='secondary'>
                    This version has no report images (its run was cancelled before the report).
                </Typography.Paragraph>
            )}
        </div>
    );
}

function delta(a: number | null, b: number | null): string {
    if (a === null || b === null) return '—';
    const value = b - a;
    return `${value >= 0 ? '+' : ''}${value.toFixed(3)}`;
}

/** Two versions side by side: overall and per-class AP, and the change from the older to the newer. */
export function ModelComparison({ older, newer }: { older: ModelVersion; newer: ModelVersion }): JSX.Element {
    const rows: { key: string; what: string; a: number | null; b: number | null }[] = [
        ...['AP', 'AP50', 'AP75'].map((name) => ({
            key: name, what: name, a: metricValue(older.metrics, name), b: metricValue(newer.metrics, name),
        })),
        ...[...new Set([...older.per_class, ...newer.per_class].map((row) => row.name))].map((name) => ({
            key: `class-${name}`,
            what: `AP ${name}`,
            a: older.per_class.find((row) => row.name === name)?.AP ?? null,
            b: newer.per_class.find((row) => row.name === name)?.AP ?? null,
        })),
    ];
    return (
        <Table
            className='detr-model-comparison'
            size='small'
            pagination={false}
            dataSource={rows}
            columns={[
                { title: 'Metric', dataIndex: 'what' },
                { title: versionName(older), dataIndex: 'a', render: (value: number | null) => formatMetric(value) },
                { title: versionName(newer), dataIndex: 'b', render: (value: number | null) => formatMetric(value) },
                { title: 'Change', key: 'delta', render: (_, row) => delta(row.a, row.b) },
            ]}
        />
    );
}

interface Props {
    client: GatewayClient;
    source: Source;
}

export function ModelsView({ client, source }: Props): JSX.Element {
    const [list, setList] = useState<ModelList | null>(null);
    const [loadError, setLoadError] = useState<GatewayError | null>(null);
    const [actionError, setActionError] = useState<GatewayError | null>(null);
    const [selected, setSelected] = useState<string | null>(null);
    const [compared, setCompared] = useState<string[]>([]);
    const [busy, setBusy] = useState(false);
    const [loads, setLoads] = useState(0);

    useEffect(() => {
        let live = true;
        client.listModels(source).then((next) => {
            if (!live) return;
            setList(next);
            setLoadError(null);
            setSelected((current) => current ?? next.models[0]?.id ?? null);
        }).catch((error) => {
            if (live) setLoadError(asGatewayError(error));
        });
        return () => {
            live = false;
        };
    }, [client, source.kind, source.id, loads]);

    const publishing = list?.models.some((model) => model.publishing) ?? false;
    useEffect(() => {
        if (!publishing) return undefined;
        const timer = setTimeout(() => setLoads((value) => value + 1), PUBLISH_POLL_MS);
        return () => clearTimeout(timer);
    }, [publishing, list]);

    const act = useCallback(async (action: () => Promise<unknown>) => {
        setBusy(true);
        setActionError(null);
        try {
            await action();
        } catch (caught) {
            setActionError(asGatewayError(caught));
        } finally {
            setBusy(false);
            setLoads((value) => value + 1);
        }
    }, []);

    if (loadError && !list) {
        return (
            <Alert
                type='error'
                showIcon
                message={loadError.message}
                action={<Button size='small' onClick={() => setLoads((value) => value + 1)}>Retry</Button>}
            />
        );
    }
    if (!list) return <div style={{ textAlign: 'center', padding: 32 }}><Spin tip='Loading models…'><div /></Spin></div>;
    if (list.models.length === 0) {
        return (
            <Typography.Paragraph type='secondary'>
                {`No model has been trained on this ${source.kind} yet. Train one: its metrics, curves and sample `
                    + 'predictions appear here.'}
            </Typography.Paragraph>
        );
    }

    const model = list.models.find((entry) => entry.id === selected) ?? list.models[0];
    const served = list.models.find((entry) => entry.function && entry.id !== model.id) ?? null;
    const pair = compared.map((id) => list.models.find((entry) => entry.id === id))
        .filter((entry): entry is ModelVersion => entry !== undefined)
        .sort((a, b) => (a.version ?? 0) - (b.version ?? 0));
    const columns: TableColumnsType<ModelVersion> = [
        { title: 'Version', key: 'version', render: (_, row) => versionName(row) },
        { title: 'Created', dataIndex: 'created', render: (value: string | null) => formatDate(value) },
        { title: 'Start', dataIndex: 'weights' },
        { title: 'Epochs', dataIndex: 'epochs', render: (value: number | null) => value ?? '—' },
        { title: 'Images', key: 'images', render: (_, row) => formatImages(row) },
        { title: 'AP', key: 'AP', render: (_, row) => formatMetric(metricValue(row.metrics, 'AP')) },
        { title: 'AP50', key: 'AP50', render: (_, row) => formatMetric(metricValue(row.metrics, 'AP50')) },
        { title: 'AP75', key: 'AP75', render: (_, row) => formatMetric(metricValue(row.metrics, 'AP75')) },
        { title: 'Published', key: 'function', render: (_, row) => <PublishedTag model={row} /> },
    ];

    return (
        <div className='detr-models-view'>
            <Table
                size='small'
                rowKey='id'
                pagination={false}
                dataSource={list.models}
                columns={columns}
                rowClassName={(row) => (row.id === model.id ? 'ant-table-row-selected' : '')}
                onRow={(row) => ({ onClick: () => setSelected(row.id), style: { cursor: 'pointer' } })}
                rowSelection={{
                    type: 'checkbox',
                    selectedRowKeys: compared,
                    columnTitle: 'Compare',
                    getCheckboxProps: (row) => ({
                        disabled: compared.length >= 2 && !compared.includes(row.id),
                        'aria-label': `Compare ${versionName(row)}`,
                    }),
                    onChange: (keys) => setCompared((keys as string[]).slice(-2)),
                }}
            />
            {actionError && <Alert type='error' showIcon style={{ marginTop: 12 }} message={actionError.message} />}
            {pair.length === 2 ? (
                <>
                    <Typography.Title level={5} style={{ marginTop: 16 }}>
                        {`${versionName(pair[0])} vs ${versionName(pair[1])}`}
                    </Typography.Title>
                    <ModelComparison older={pair[0]} newer={pair[1]} />
                </>
            ) : (
                <>
                    <Space style={{ width: '100%', justifyContent: 'space-between', marginTop: 16 }}>
                        <Typography.Title level={5} style={{ margin: 0 }}>
                            {`${versionName(model)}: mAP ${formatMetric(metricValue(model.metrics, 'AP'))}`}
                        </Typography.Title>
                        <PublishActions
                            model={model}
                            served={served}
                            canPublish={list.publish}
                            busy={busy}
                            onPublish={(replace) => act(() => client.publishModel(model.id, replace))}
                            onUnpublish={() => act(() => client.unpublishModel(model.id))}
                        />
                    </Space>
                    <ModelDetails client={client} model={model} />
                </>
            )}
        </div>
    );
}
