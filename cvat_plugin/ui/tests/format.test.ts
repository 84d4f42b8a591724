import { describePhase, formatEta, formatMetric } from '../src/ts/format';
import { GatewayError } from '../src/ts/errors';
import {
    checkEpochs, checkImageSize, checkValPercent, checkWeights, dialogOptions, taskDefaults, toFormValues, toTrainOptions,
} from '../src/ts/options';
import { makeJob, makeOptionSchema, makeSummary } from './fixtures';

/** The limits the gateway sends (detr.config's bounds; the validation share in percent). */
const { epochs: EPOCHS, imageSize: IMAGE_SIZE, valPercent: VAL_PERCENT } = dialogOptions(makeOptionSchema());

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
        [checkEpochs(null, EPOCHS), /Enter the number of epochs: a whole number from 1 to 10000/],
        [checkEpochs(0, EPOCHS), /The number of epochs must be a whole number from 1 to 10000 \(got 0\)/],
        [checkEpochs(2.5, EPOCHS), /got 2.5/],
        [checkImageSize(5000, IMAGE_SIZE), /image size in pixels must be .* 32 to 4096 \(got 5000\).*shorter side/],
        [checkImageSize(1400, { min: 32, max: 1024 }), /from 32 to 1024 \(got 1400\)/],
        [checkValPercent(70, VAL_PERCENT), /validation share must be from 1 % to 50 % .*\(got 70 %\)/],
        [checkValPercent(undefined, VAL_PERCENT), /Enter the validation share/],
        [checkWeights('previous', ['coco', 'scratch']), /"previous" are not available here; choose one of: coco, scratch/],
        [checkWeights(null, ['coco']), /Choose the starting weights/],
    ])('rejects bad input with a fix (%#)', (problem, message) => {
        expect(problem).toMatch(message);
    });

    it('accepts values inside the limits', () => {
        expect([checkEpochs(1, EPOCHS), checkEpochs(10000, EPOCHS), checkImageSize(1400, IMAGE_SIZE), checkValPercent(15, VAL_PERCENT)])
            .toEqual([null, null, null, null]);
        expect(checkWeights('coco', ['coco'])).toBeNull();
    });

    it('shows the validation fraction in percent and sends it back as a fraction', () => {
        const options = { epochs: 5, image_size: 800, weights: 'coco' as const, val_fraction: 0.15, publish: true };
        expect(toFormValues(options).val_percent).toBe(15);
        expect(toTrainOptions(toFormValues(options))).toEqual(options);
    });

    it('takes the dialog’s limits and defaults from the gateway’s options', () => {
        const dialog = dialogOptions(makeOptionSchema({ epochs: { default: 30, maximum: 200 } }));
        expect(dialog.epochs).toEqual({ min: 1, max: 200 });
        expect(dialog.valPercent).toEqual({ min: 1, max: 50 });
        expect(dialog.defaults).toEqual({ epochs: 30, image_size: 800, weights: 'coco', val_fraction: 0.15, publish: true });
    });

    it('refuses a gateway that does not describe one of the dialog’s options', () => {
        const schema = makeOptionSchema().filter((option) => option.name !== 'image_size');
        expect(() => dialogOptions(schema)).toThrow(GatewayError);
        expect(() => dialogOptions(schema)).toThrow(/does not describe the training option 'image_size'/);
        expect(() => dialogOptions(makeOptionSchema({ epochs: { maximum: undefined } }))).toThrow(/'epochs'/);
    });

    it('follows the site’s defaults as far as the task can', () => {
        const { defaults } = dialogOptions(makeOptionSchema());
        expect(taskDefaults(defaults, makeSummary())).toEqual(defaults);
        const limited = makeSummary({ weights_options: ['scratch', 'previous'], publish_unavailable: 'no dashboard' });
        expect(taskDefaults(defaults, limited)).toEqual({ ...defaults, weights: 'scratch', publish: false });
    });
});
