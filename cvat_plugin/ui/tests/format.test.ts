import { describePhase, formatEta, formatMetric } from '../src/ts/format';
import {
    checkEpochs, checkImageSize, checkValPercent, checkWeights, toFormValues, toTrainOptions,
} from '../src/ts/options';
import { makeJob } from './fixtures';

describe('time left in words', () => {
    it.each([
        [null, 'estimating the time left'],
        [-5, 'estimating the time left'],
        [12, 'less than a minute left'],
        [61, 'about 1 minute left'],
        [725, 'about 12 minutes left'],
        [3600, 'about 1 hour left'],
        [4800, 'about 1 hour 20 minutes left'],
        [7260, 'about 2 hours 1 minute left'],
        [90000, 'about 1 day 1 hour left'],
    ])('%s s -> %s', (seconds, words) => {
        expect(formatEta(seconds)).toBe(words);
    });
});

describe('job phase', () => {
    it('counts epochs from 1 and names the step', () => {
        expect(describePhase(makeJob({ epoch: 3, epochs: 10, step: 5, steps: 20 }))).toBe('Epoch 3 of 10 (step 5 of 20)');
        expect(describePhase(makeJob({ epoch: 0, step: 0 }))).toBe('Epoch 1 of 10 (step 0 of 20)');
        expect(describePhase(makeJob({ state: 'queued' }))).toMatch(/^Queued/);
        expect(describePhase(makeJob({ state: 'preparing' }))).toBe(
            'Preparing: exporting the task from CVAT and building the training set');
    });

    it('prints metrics with three decimals and a dash when missing', () => {
        expect(formatMetric(0.41234)).toBe('0.412');
        expect(formatMetric(null)).toBe('—');
    });
});

describe('option checks', () => {
    it.each([
        [checkEpochs(null), /Enter the number of epochs: a whole number from 1 to 1000/],
        [checkEpochs(0), /The number of epochs must be a whole number from 1 to 1000 \(got 0\)/],
        [checkEpochs(2.5), /got 2.5/],
        [checkImageSize(4000), /image size in pixels must be .* 128 to 2048 \(got 4000\).*shorter side/],
        [checkValPercent(70), /validation share must be from 1 % to 50 % .*\(got 70 %\)/],
        [checkValPercent(undefined), /Enter the validation share/],
        [checkWeights('previous', ['coco', 'scratch']), /"previous" are not available here; choose one of: coco, scratch/],
        [checkWeights(null, ['coco']), /Choose the starting weights/],
    ])('rejects bad input with a fix (%#)', (problem, message) => {
        expect(problem).toMatch(message);
    });

    it('accepts values inside the limits', () => {
        expect([checkEpochs(1), checkEpochs(1000), checkImageSize(800), checkValPercent(15)]).toEqual([null, null, null, null]);
        expect(checkWeights('coco', ['coco'])).toBeNull();
    });

    it('shows the validation fraction in percent and sends it back as a fraction', () => {
        const options = { epochs: 5, image_size: 800, weights: 'coco' as const, val_fraction: 0.15, publish: true };
        expect(toFormValues(options).val_percent).toBe(15);
        expect(toTrainOptions(toFormValues(options))).toEqual(options);
    });
});
