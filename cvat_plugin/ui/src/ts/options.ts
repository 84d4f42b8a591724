/**
 * The dialog's training options: limits, checks with messages that say how to fix the value,
 * and the mapping between the form (validation share in percent) and the gateway's body.
 */
import { TrainOptions, Weights } from './gateway-types';

export const LIMITS = {
    epochs: { min: 1, max: 1000 },
    imageSize: { min: 128, max: 2048 },
    valPercent: { min: 1, max: 50 },
} as const;

export const WEIGHTS_DESCRIPTIONS: Record<Weights, string> = {
    coco: 'COCO-pretrained DETR (recommended; fine-tunes fastest)',
    imagenet: 'ImageNet backbone only (transformer from scratch; needs more epochs)',
    scratch: 'Random initialisation (needs a large dataset and many epochs)',
    previous: "This task's last trained model (continue training)",
};

/** What the form holds; the validation share is shown in percent. */
export interface FormValues {
    epochs: number | null;
    image_size: number | null;
    weights: Weights | null;
    val_percent: number | null;
    publish: boolean;
}

function checkWholeNumber(value: number | null | undefined, what: string, min: number, max: number): string | null {
    if (value === null || value === undefined || Number.isNaN(value)) {
        return `Enter ${what}: a whole number from ${min} to ${max}.`;
    }
    if (!Number.isInteger(value) || value < min || value > max) {
        return `${what[0].toUpperCase()}${what.slice(1)} must be a whole number from ${min} to ${max} (got ${value}).`;
    }
    return null;
}

export function checkEpochs(value: number | null | undefined): string | null {
    return checkWholeNumber(value, 'the number of epochs', LIMITS.epochs.min, LIMITS.epochs.max);
}

export function checkImageSize(value: number | null | undefined): string | null {
    const problem = checkWholeNumber(value, 'the image size in pixels', LIMITS.imageSize.min, LIMITS.imageSize.max);
    return problem && `${problem} Images are resized so that their shorter side has this length; DETR uses 800.`;
}

export function checkValPercent(value: number | null | undefined): string | null {
    const { min, max } = LIMITS.valPercent;
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
        // Rounded so 0.15 shows as 15 rather than 15.000000000000002.
        val_percent: Math.round(options.val_fraction * 1000) / 10,
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
