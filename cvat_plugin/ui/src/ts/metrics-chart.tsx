/**
 * Loss and validation mAP / AP50 per epoch as a small SVG chart: loss on the left scale (from 0 to
 * its largest value), AP on the right (0 to 1). Plain SVG: CVAT's UI bundles no chart library.
 */
import React from 'react';
import { Space, Typography } from 'antd';

import { EpochPoint } from './gateway-types';

const WIDTH = 560;
const HEIGHT = 170;
const PAD = { left: 44, right: 40, top: 10, bottom: 26 };

export interface Series {
    key: 'train_loss' | 'AP' | 'AP50';
    label: string;
    color: string;
    /** Drawn against the 0..1 scale (AP) rather than the loss scale. */
    unit: boolean;
}

export const SERIES: Series[] = [
    { key: 'train_loss', label: 'Loss (train)', color: '#fa8c16', unit: false },
    { key: 'AP', label: 'mAP (val)', color: '#1677ff', unit: true },
    { key: 'AP50', label: 'AP50 (val)', color: '#52c41a', unit: true },
];

function values(points: EpochPoint[], key: Series['key']): [number, number][] {
    return points
        .filter((point) => typeof point[key] === 'number' && Number.isFinite(point[key]))
        .map((point) => [point.epoch, point[key] as number]);
}

/** SVG coordinates of the series: x by epoch over 1..`lastEpoch`, y over 0..`top`. */
export function project(series: [number, number][], lastEpoch: number, top: number): [number, number][] {
    const spanX = WIDTH - PAD.left - PAD.right;
    const spanY = HEIGHT - PAD.top - PAD.bottom;
    return series.map(([epoch, value]) => [
        PAD.left + (lastEpoch > 1 ? ((epoch - 1) / (lastEpoch - 1)) * spanX : spanX / 2),
        PAD.top + spanY - (top > 0 ? Math.min(Math.max(value / top, 0), 1) : 0) * spanY,
    ]);
}

interface Props {
    points: EpochPoint[];
    /** The run's planned epochs: the x axis spans them from the start, so the curve grows into it. */
    epochs?: number;
}

export function MetricsChart({ points, epochs }: Props): JSX.Element {
    if (points.length === 0) {
        return (
            <Typography.Paragraph type='secondary' className='detr-metrics-chart-empty'>
                The loss and mAP curves appear here after the first epoch.
            </Typography.Paragraph>
        );
    }
    const lastEpoch = Math.max(epochs ?? 0, ...points.map((point) => point.epoch));
    const lossTop = Math.max(...values(points, 'train_loss').map(([, value]) => value), 0) * 1.05;
    const bottom = HEIGHT - PAD.bottom;
    return (
        <div className='detr-metrics-chart'>
            <svg
                viewBox={`0 0 ${WIDTH} ${HEIGHT}`}
                width='100%'
                role='img'
                aria-label={`Loss and validation mAP per epoch, ${points.length} of ${lastEpoch} epochs`}
                data-epochs={points.length}
            >
                <line x1={PAD.left} y1={bottom} x2={WIDTH - PAD.right} y2={bottom} stroke='#d9d9d9' />
                <line x1={PAD.left} y1={PAD.top} x2={PAD.left} y2={bottom} stroke='#d9d9d9' />
                <line x1={WIDTH - PAD.right} y1={PAD.top} x2={WIDTH - PAD.right} y2={bottom} stroke='#d9d9d9' />
                <text x={PAD.left - 4} y={PAD.top + 8} fontSize='10' textAnchor='end' fill='#8c8c8c'>
                    {lossTop > 0 ? (lossTop / 1.05).toPrecision(2) : '0'}
                </text>
                <text x={PAD.left - 4} y={bottom} fontSize='10' textAnchor='end' fill='#8c8c8c'>0</text>
                <text x={WIDTH - PAD.right + 4} y={PAD.top + 8} fontSize='10' fill='#8c8c8c'>1.0</text>
                <text x={WIDTH - PAD.right + 4} y={bottom} fontSize='10' fill='#8c8c8c'>0</text>
                <text x={PAD.left} y={HEIGHT - 6} fontSize='10' fill='#8c8c8c'>epoch 1</text>
                <text x={WIDTH - PAD.right} y={HEIGHT - 6} fontSize='10' textAnchor='end' fill='#8c8c8c'>
                    {`epoch ${lastEpoch}`}
                </text>
                {SERIES.map((series) => {
                    const xy = project(values(points, series.key), lastEpoch, series.unit ? 1 : lossTop);
                    return (
                        <g key={series.key} data-series={series.key} data-points={xy.length}>
                            <polyline
                                points={xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}
                                fill='none'
                                stroke={series.color}
                                strokeWidth='2'
                            />
                            {xy.map(([x, y], index) => (
                                <circle key={index} cx={x} cy={y} r='2.5' fill={series.color} />
                            ))}
                        </g>
                    );
                })}
            </svg>
            <Space size='middle'>
                {SERIES.map((series) => (
                    <Typography.Text key={series.key} style={{ color: series.color, fontSize: 12 }}>
                        {`— ${series.label}`}
                    </Typography.Text>
                ))}
            </Space>
        </div>
    );
}
