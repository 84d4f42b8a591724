"""The shared volume (DETR_HOME): its layout, the training jobs and the model cards kept there."""
