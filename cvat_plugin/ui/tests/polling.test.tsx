import { act, renderHook } from '@testing-library/react';

import { GatewayClient } from '../src/ts/api';
import { GatewayError, networkError } from '../src/ts/errors';
import { Job } from '../src/ts/gateway-types';
import { nextPollDelay, POLL_INITIAL_MS, POLL_MAX_MS, useJobPolling } from '../src/ts/use-job-polling';
import { makeJob } from './fixtures';

/** A client whose getJob answers from a script and records the fake time of each call. */
function scriptedClient(answer: (call: number) => Job | Error): GatewayClient & { times: number[] } {
    const times: number[] = [];
    const getJob = vi.fn(async () => {
        times.push(Date.now());
        const next = answer(times.length);
        if (next instanceof Error) throw next;
        return next;
    });
    const unused = vi.fn(() => Promise.reject(new Error('not used in polling')));
    return {
        getJob, times, getOptions: unused, getSummary: unused, startTraining: unused, listJobs: unused, cancelJob: unused,
        getJobMetrics: unused, listModels: unused, getModel: unused, publishModel: unused, unpublishModel: unused,
        reportImageUrl: () => '',
    };
}

async function advance(ms: number): Promise<void> {
    await act(async () => {
        await vi.advanceTimersByTimeAsync(ms);
    });
}

/** Gaps between consecutive polls, the first measured from the hook's start. */
function gaps(times: number[], start: number): number[] {
    return times.map((time, index) => time - (index === 0 ? start : times[index - 1]));
}

describe('job polling', () => {
    beforeEach(() => {
        vi.useFakeTimers({ now: 0 });
    });
    afterEach(() => {
        vi.useRealTimers();
    });

    it('backs off from 1 s to 10 s while the job does not move', async () => {
        const running = makeJob();
        const client = scriptedClient(() => running);
        renderHook(() => useJobPolling(client, running));
        await advance(60_000);

        expect(gaps(client.times, 0).slice(0, 7)).toEqual([1000, 2000, 4000, 8000, 10000, 10000, 10000]);
    });

    it('drops back to 1 s when the job moves', async () => {
        const client = scriptedClient((call) => makeJob({ step: call < 4 ? 5 : 6 }));
        renderHook(() => useJobPolling(client, makeJob({ step: 5 })));
        await advance(20_000);

        // Calls 1-3 see no change (1, 2, 4 s); call 4 sees step 6, so call 5 comes 1 s later.
        expect(gaps(client.times, 0).slice(0, 6)).toEqual([1000, 2000, 4000, 8000, 1000, 2000]);
    });

    it('shows each answer and stops once the job has finished', async () => {
        const client = scriptedClient((call) => (call < 3 ? makeJob({ step: call }) : makeJob({ state: 'succeeded' })));
        const { result } = renderHook(() => useJobPolling(client, makeJob({ step: 0 })));
        await advance(1000);
        expect(result.current.job.step).toBe(1);
        await advance(60_000);

        expect(client.times).toHaveLength(3);
        expect(result.current.job.state).toBe('succeeded');
        expect(result.current.polling).toBe(false);
    });

    it('follows the trainer job that a preparation became', async () => {
        const client = scriptedClient((call) => (call === 1 ?
            makeJob({ id: 'job-7', state: 'queued' }) : makeJob({ id: 'job-7', state: 'succeeded' })));
        const { result } = renderHook(() => useJobPolling(client, makeJob({ id: 'prep-1', state: 'preparing' })));
        await advance(1000);
        expect(result.current.job.id).toBe('job-7');
        await advance(1000);

        expect((client.getJob as ReturnType<typeof vi.fn>).mock.calls.map(([id]) => id)).toEqual(['prep-1', 'job-7']);
        expect(result.current.job.state).toBe('succeeded');
    });

    it('does not poll a job that has already finished', async () => {
        const client = scriptedClient(() => makeJob());
        const { result } = renderHook(() => useJobPolling(client, makeJob({ state: 'failed' })));
        await advance(30_000);

        expect(client.times).toHaveLength(0);
        expect(result.current.polling).toBe(false);
    });

    it('stops when the component unmounts', async () => {
        const client = scriptedClient(() => makeJob());
        const { unmount } = renderHook(() => useJobPolling(client, makeJob()));
        await advance(3000);
        const before = client.times.length;
        unmount();
        await advance(60_000);

        expect(before).toBe(2);
        expect(client.times).toHaveLength(before);
    });

    it('keeps retrying with backoff through network errors and clears the error once answered', async () => {
        const client = scriptedClient((call) => (call <= 2 ? networkError() : makeJob({ step: 9 })));
        const { result } = renderHook(() => useJobPolling(client, makeJob()));
        await advance(1000);
        expect(result.current.error?.kind).toBe('network');
        expect(result.current.polling).toBe(true);
        await advance(6000);

        expect(gaps(client.times, 0).slice(0, 3)).toEqual([1000, 2000, 4000]);
        expect(result.current.error).toBeNull();
        expect(result.current.job.step).toBe(9);
    });

    it('stops on an error that retrying cannot fix, and restarts on request', async () => {
        const client = scriptedClient((call) => (
            call === 1 ? new GatewayError('session', 401, 'Your CVAT session has ended') : makeJob({ step: 7 })));
        const { result } = renderHook(() => useJobPolling(client, makeJob()));
        await advance(30_000);
        expect(client.times).toHaveLength(1);
        expect(result.current.error?.kind).toBe('session');
        expect(result.current.polling).toBe(false);

        act(() => result.current.restart());
        await advance(1000);
        expect(client.times).toHaveLength(2);
        expect(result.current.job.step).toBe(7);
    });

    it('computes the next delay', () => {
        expect(nextPollDelay(POLL_INITIAL_MS, false)).toBe(2000);
        expect(nextPollDelay(8000, false)).toBe(POLL_MAX_MS);
        expect(nextPollDelay(POLL_MAX_MS, true)).toBe(POLL_INITIAL_MS);
    });
});
