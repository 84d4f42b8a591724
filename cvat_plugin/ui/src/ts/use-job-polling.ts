/**
 * Follows one job with `GET /jobs/{id}`: a setTimeout chain whose delay starts at 1 s, doubles
 * while nothing changes, is capped at 10 s and drops back to 1 s when the job moves. It stops when
 * the job finishes, on an error that retrying cannot fix, and when the component unmounts.
 */
import { useCallback, useEffect, useRef, useState } from 'react';

import { GatewayClient } from './api';
import { asGatewayError, GatewayError } from './errors';
import { isFinished, Job } from './gateway-types';

export const POLL_INITIAL_MS = 1000;
export const POLL_MAX_MS = 10000;
export const POLL_FACTOR = 2;

export function nextPollDelay(previousMs: number, changed: boolean): number {
    return changed ? POLL_INITIAL_MS : Math.min(POLL_MAX_MS, previousMs * POLL_FACTOR);
}

/** Whether anything the progress view shows has moved. */
export function jobChanged(before: Job, after: Job): boolean {
    return before.id !== after.id ||
        before.state !== after.state ||
        before.epoch !== after.epoch ||
        before.step !== after.step ||
        before.progress !== after.progress ||
        before.loss !== after.loss ||
        before.error !== after.error ||
        before.function !== after.function;
}

export interface JobPolling {
    job: Job;
    /** The last failed poll; cleared by the next good one. */
    error: GatewayError | null;
    /** True while polling continues (on transient errors too). */
    polling: boolean;
    /** Shows `job` (e.g. a cancel reply) and polls again from the initial delay. */
    restart: (job?: Job) => void;
}

export function useJobPolling(client: GatewayClient, initialJob: Job): JobPolling {
    const [job, setJob] = useState(initialJob);
    const [error, setError] = useState<GatewayError | null>(null);
    const [polling, setPolling] = useState(!isFinished(initialJob));
    const [generation, setGeneration] = useState(0);
    const latest = useRef(initialJob);

    useEffect(() => {
        if (isFinished(latest.current)) {
            setPolling(false);
            return undefined;
        }
        let stopped = false;
        let timer: ReturnType<typeof setTimeout> | undefined;
        let delay = POLL_INITIAL_MS;
        setPolling(true);

        const poll = async (): Promise<void> => {
            try {
                const next = await client.getJob(latest.current.id);
                if (stopped) return;
                const changed = jobChanged(latest.current, next);
                latest.current = next;
                setJob(next);
                setError(null);
                if (isFinished(next)) {
                    setPolling(false);
                    return;
                }
                delay = nextPollDelay(delay, changed);
            } catch (caught) {
                if (stopped) return;
                const problem = asGatewayError(caught);
                setError(problem);
                if (!problem.transient) {
                    setPolling(false);
                    return;
                }
                delay = nextPollDelay(delay, false);
            }
            timer = setTimeout(poll, delay);
        };

        timer = setTimeout(poll, delay);
        return () => {
            stopped = true;
            clearTimeout(timer);
        };
    }, [client, generation]);

    const restart = useCallback((next?: Job) => {
        if (next) {
            latest.current = next;
            setJob(next);
        }
        setError(null);
        setGeneration((value) => value + 1);
    }, []);

    return { job, error, polling, restart };
}
