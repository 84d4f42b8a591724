"""The gateway: the Train DETR plugin's API under /detr/api and the receiver of CVAT's webhooks."""
