"""The ``cvat-detr`` command: one module per command group, exit codes in :mod:`cvat_plugin.cli.exits`."""

from cvat_plugin.cli.app import main

__all__ = ["main"]
