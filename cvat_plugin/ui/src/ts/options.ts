/**
 * The dialog's training options. Their limits and defaults are the gateway's (`GET /options`: the one
 * option schema the trainer, the gateway and `cvat-detr` check, with the site's defaults); this module
 * picks the dialog's fields out of it, checks values with messages that say how to fix them, and maps
 * between the form (validation share in percent) and the gateway's body.
 */
import { GatewayError } from './errors';
import { OptionSpec, TaskSummary, TrainOptions, Weights } from './gateway-types';

export interface Range {
    min: number;
    max: number;
}

/** What the dialog needs of the schema: its fields' ranges (the validation share in percent) and defaults. */
export interface DialogOptions {
    epochs: Range;
    imageSize: Range;
    valPercent: Range;
    defaults: TrainOptions;
}

/** The schema as the dialog holds it while it loads, once it is there, or why it is not. */
export type OptionsState =
    { kind: 'loading' } |
    { kind: 'ready'; dialog: DialogOptions } |
    { kind: 'error'; error: GatewayError };

export const WEIGHTS_DESCRIPTIONS: Record<Weights, string> = {
    coco: 'COCO-pretrained DETR (recommended; fine-tunes fastest)',
    imagenet: 'ImageNet backbone only (transformer from scratch; needs more epochs)',
    scratch: 'Random initialisation (needs a large dataset and many epochs)',
    previous: "This task's last trained model (continue training)",
};

/** Rounded to a tenth of a percent, so 0.15 shows as 15 rather than 15.000000000000002. */
function percent(fraction: number): number {
    return Math.round(fraction * 1000) / 10;
}

/** A gateway older than the dialog, that does not describe one of its options. */
function missing(name: string): GatewayError {
    return new GatewayError(
        'server',
        null,
        `The DETR gateway does not describe the training option '${name}', so the dialog cannot check it. ` +
            'Ask a CVAT admin to update the DETR gateway.',
    );
}

/** The dialog's ranges and defaults from `GET /options`; throws a GatewayError naming what a gateway left out. */
export function dialogOptions(schema: OptionSpec[]): DialogOptions {
    const spec = (name: string, type: OptionSpec['type']): OptionSpec => {
        const found = schema.find((option) => option.name === name && option.section !== 'model');
        if (!found || found.type !== type || found.default === null || found.default === undefined) throw missing(name);
        return found;
    };
    const range = (option: OptionSpec): Range => {
        if (typeof option.minimum !== 'number' || typeof option.maximum !== 'number') throw missing(option.name);
        return { min: option.minimum, max: option.maximum };
    };
    const epochs = spec('epochs', 'integer');
    const imageSize = spec('image_size', 'integer');
    const valFraction = spec('val_fraction', 'number');
    const valRange = range(valFraction);
    return {
        epochs: range(epochs),
        imageSize: range(imageSize),
        valPercent: { min: percent(valRange.min), max: percent(valRange.max) },
        defaults: {
            epochs: epochs.default as number,
            image_size: imageSize.default as number,
            weights: spec('weights', 'string').default as Weights,
            val_fraction: valFraction.default as number,
            publish: spec('publish', 'boolean').default as boolean,
        },
    };
}

/** The site's defaults as far as this task can follow them: weights it can start from, no publishing where the trainer cannot. */
export function taskDefaults(defaults: TrainOptions, summary: TaskSummary): TrainOptions {
    const weights = summary.weights_options.includes(defaults.weights) ?
        defaults.weights :
        summary.weights_options[0] ?? defaults.weights;
    return { ...defaults, weights, publish: defaults.publish && !summary.publish_unavailable };
}

/** What the form holds; the validation share is shown in percent. */
export interface FormValues {
    epochs: number | null;
    image_size: number | null;
    weights: Weights | null;
    val_percent: number | null;
    publish: boolean;
}

function checkWholeNumber(value: number | null | undefined, what: string, { min, max }: Range): string | null {
    if (value === null || value === undefined || Number.isNaN(value)) {
        return `Enter ${what}: a whole number from ${min} to ${max}.`;
    }
    if (!Number.isInteger(value) || value < min || value > max) {
        return `${what[0].toUpperCase()}${what.slice(1)} must be a whole number from ${min} to ${max} (got ${value}).`;
    }
    return null;
}

export function checkEpochs(value: number | null | undefined, range: Range): string | null {
    return checkWholeNumber(value, 'the number of epochs', range);
}

export function checkImageSize(value: number | null | undefined, range: Range): string | null {
    const problem = checkWholeNumber(value, 'the image size in pixels', range);
    return problem && `${problem} Images are resized so that their shorter side has this length.`;
}

export function checkValPercent(value: number | null | undefined, { min, max }: Range): string | null {
    if (value === null || value === undefined || Number.isNaN(value)) {
        return `Enter the validation share: ${min} % to ${max} % of the annotated images.`;
    }
    if (value < min || value > max) {
        return `The validation share must be from ${min} % to ${max} % of the annotated images (got ${value} %).`;
    }
    return null;
}

export function checkWeights(value: Weights | null | undefined, allowed: readonly Weights[]): string | null {
    if (!value) return 'Choose the starting weights.';
    if (!allowed.includes(value)) {
        return `Starting weights ${JSON.stringify(value)} are not available here; choose one of: ${allowed.join(', ')}.`;
    }
    return null;
}

export function toFormValues(options: TrainOptions): FormValues {
    return {
        epochs: options.epochs,
        image_size: options.image_size,
        weights: options.weights,
        val_percent: percent(options.val_fraction),
        publish: options.publish,
    };
}

/** Only called with values that passed the checks above. */
export function toTrainOptions(values: FormValues): TrainOptions {
    return {
        epochs: values.epochs as number,
        image_size: values.image_size as number,
        weights: values.weights as Weights,
        val_fraction: Math.round((values.val_percent as number) * 10) / 1000,
        publish: values.publish,
    };
}
