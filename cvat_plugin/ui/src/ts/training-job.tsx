/** Follows one job until it finishes, and cancels it on request. */
import React, { useState } from 'react';

import { GatewayClient } from './api';
import { asGatewayError, GatewayError } from './errors';
import { isFinished, Job } from './gateway-types';
import { JobOutcome } from './job-outcome';
import { JobProgress } from './job-progress';
import { useJobMetrics } from './use-job-metrics';
import { useJobPolling } from './use-job-polling';

interface Props {
    client: GatewayClient;
    job: Job;
    notice: string | null;
    onTrainAgain: () => void;
    onClose: () => void;
}

export function TrainingJob({ client, job: initialJob, notice, onTrainAgain, onClose }: Props): JSX.Element {
    const { job, error, polling, restart } = useJobPolling(client, initialJob);
    const points = useJobMetrics(client, job);
    const [cancelling, setCancelling] = useState(false);
    const [cancelError, setCancelError] = useState<GatewayError | null>(null);

    const cancel = async (): Promise<void> => {
        setCancelling(true);
        setCancelError(null);
        try {
            restart(await client.cancelJob(job.id));
        } catch (caught) {
            setCancelError(asGatewayError(caught));
        } finally {
            setCancelling(false);
        }
    };

    if (isFinished(job)) return <JobOutcome job={job} points={points} onTrainAgain={onTrainAgain} onClose={onClose} />;
    return (
        <JobProgress
            job={job}
            points={points}
            notice={notice}
            pollError={error}
            polling={polling}
            cancelling={cancelling}
            cancelError={cancelError}
            onCancel={cancel}
            onCheckAgain={() => restart()}
            onClose={onClose}
        />
    );
}
