"""Nuclio entry point of the DETR trainer: an asynchronous job API over one background worker.

``init_context`` reads the jobs on the shared volume (``DETR_HOME``), resumes the ones a
restart interrupted and starts the worker; ``handler`` answers the job API at once. Deploy
with one worker (``numWorkers: 1``): each Nuclio worker is its own process with its own queue.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from cvat_plugin.home.jobs import JobStore
from cvat_plugin.home.layout import DetrHome
from cvat_plugin.home.models import ModelStore
from cvat_plugin.nuclio.publish import PublishSettings, success_hook
from cvat_plugin.responses import RequestError, error_response, json_body, json_response
from cvat_plugin.trainer.api import TrainerApi
from cvat_plugin.trainer.auth import TrainerTokenError, token_from_env
from cvat_plugin.trainer.launch import LaunchConfigError, launcher_from_env
from cvat_plugin.trainer.publishing import ModelPublisher
from cvat_plugin.trainer.runner import JobRunner

logger = logging.getLogger(__name__)

_STDOUT = logging.StreamHandler(sys.stdout)
_STDOUT.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

#: How long the termination callback waits for the running job to save its checkpoint. Nuclio
#: kills the worker after the platform's grace period (Docker stop: 10 s by default), so a step
#: plus the checkpoint write must fit; the job is resumable from its last epoch in any case.
TERMINATION_TIMEOUT_S = 60.0


def init_context(context: Any) -> None:
    _log_to_stdout()
    root = os.environ.get("DETR_HOME")
    if not root:
        raise RuntimeError("DETR_HOME is not set; mount the shared volume and set DETR_HOME to its path")
    try:
        token = token_from_env(who="the trainer")
    except TrainerTokenError as e:
        raise RuntimeError(str(e)) from None
    home = DetrHome(root)
    home.create()
    try:  # where jobs train: this process, one process per GPU, or a cluster (DETR_TRAIN_BACKEND)
        launcher = launcher_from_env(home.root)
    except LaunchConfigError as e:
        raise RuntimeError(str(e)) from None
    store = JobStore(home.runs)
    store.load()
    # With a Nuclio dashboard configured, a successful job's model is published as a CVAT detector
    # (unless the job said "publish": false).
    publishing = PublishSettings.from_env()
    runner = JobRunner(store, home, on_success=success_hook(publishing, home.root) if publishing.enabled else None,
                       launcher=launcher)
    runner.recover()
    runner.start()
    publisher = ModelPublisher(publishing, ModelStore(home)) if publishing.enabled else None
    if publisher is not None:
        publisher.recover()
    context.platform.set_termination_callback(lambda: _terminate(runner))
    context.user_data.api = TrainerApi(store, runner, home, token=token, publisher=publisher)
    context.user_data.runner = runner
    context.logger.info_with(
        "Trainer ready", home=str(home.root), jobs=len(store.jobs()), waiting=len(runner.queued),
        problems=len(store.problems), publishing=publishing.enabled, training=launcher.description,
    )


def handler(context: Any, event: Any) -> Any:
    api: TrainerApi = context.user_data.api
    try:
        status, body = api.handle(event.method or "GET", event.path or "/", event.fields or {},
                                  lambda: json_body(event), authorization=event.get_header("Authorization"))
    except RequestError as e:
        return error_response(context, e)
    return json_response(context, body, status)


def _terminate(runner: JobRunner) -> None:
    """Nuclio's termination signal: checkpoint the running job so the next start resumes it."""
    logger.info("Termination signal: stopping the running job at its next step")
    if runner.terminate(TERMINATION_TIMEOUT_S):
        logger.info("Trainer stopped; the running job will resume on the next start")
    else:
        logger.warning("The running job did not stop within %.0f s; it resumes from its last epoch checkpoint",
                       TERMINATION_TIMEOUT_S)


def _log_to_stdout() -> None:
    """Send the engine's and the trainer's logs to stdout, the container log.

    The training thread must not log through ``context.logger`` or anything that reaches the
    wrapper's socket (records are dropped when the processor is not reading), so these loggers
    get their own handler and do not propagate to handlers the wrapper may have installed.
    """
    for name in ("detr", "serverless"):
        package_logger = logging.getLogger(name)
        if _STDOUT not in package_logger.handlers:
            package_logger.addHandler(_STDOUT)
        package_logger.setLevel(logging.INFO)
        package_logger.propagate = False
