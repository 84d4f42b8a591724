/**
 * A job's curves (`GET /jobs/{id}/metrics`), fetched again whenever the polled job shows a new epoch
 * or new validation metrics. A failed fetch keeps the last curves: the progress view reports polling
 * problems already, and the curves are not worth a second alert.
 */
import { useEffect, useState } from 'react';

import { GatewayClient } from './api';
import { EpochPoint, Job } from './gateway-types';

/** What changes when the trainer has appended an epoch to the job's metrics. */
function curveKey(job: Job): string {
    return `${job.id}|${job.state}|${job.epoch}|${JSON.stringify(job.metrics ?? {})}`;
}

export function useJobMetrics(client: GatewayClient, job: Job): EpochPoint[] {
    const [points, setPoints] = useState<EpochPoint[]>([]);
    const key = curveKey(job);
    const preparing = job.state === 'preparing';

    useEffect(() => {
        if (preparing) return undefined;
        let live = true;
        client.getJobMetrics(job.id).then((next) => {
            if (live) setPoints(next);
        }).catch(() => undefined);
        return () => {
            live = false;
        };
    }, [client, key, preparing]);

    return points;
}
