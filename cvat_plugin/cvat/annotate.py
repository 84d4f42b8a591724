"""Automatic annotation of a CVAT task with a trained model.

Two ways, as a CVAT user has them:

- **through CVAT** with a published function: ``POST /api/lambda/requests``, then follow
  the request's progress, exactly what the task's "Automatic annotation" action does. CVAT
  runs one such request per task; a second one is refused (409) and reported with the
  running request's details.
- **locally** through cvat-sdk's auto-annotation driver and :mod:`cvat_plugin.cvat.sdk_function`:
  frames are downloaded, the model runs in this process and the shapes are uploaded; no
  Nuclio needed.

Either way CVAT (or cvat-sdk) maps the model's labels to the task's labels by name.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from cvat_plugin.cvat.auth import AccessToken, Credentials, LegacyToken, PasswordCredentials
from cvat_plugin.cvat.client import ConflictError, CvatClient, NotFoundError
from cvat_plugin.cvat.dataset import require_images
from cvat_plugin.progress import NullProgressReporter, ProgressReporter

logger = logging.getLogger(__name__)

#: Seconds between two polls of a running automatic annotation.
DEFAULT_POLL_INTERVAL = 2.0
#: A request that has not finished after this long is left running and reported.
DEFAULT_TIMEOUT = 6 * 3600.0


class AnnotateError(Exception):
    """The annotation could not start, failed or timed out; the message says what to do."""


class UnknownFunction(AnnotateError):
    """CVAT offers no model by that name."""


@dataclass(frozen=True)
class AnnotationResult:
    task_id: int
    model: str
    """The function id (through CVAT) or the model file (locally)."""
    shapes_before: int
    shapes_after: int

    @property
    def added(self) -> int:
        return self.shapes_after - self.shapes_before


def annotate_with_function(
    client: CvatClient,
    task_id: int,
    function_id: str,
    *,
    threshold: Optional[float] = None,
    clear_existing: bool = False,
    pbar: Optional[ProgressReporter] = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    timeout: float = DEFAULT_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> AnnotationResult:
    """Annotate the task in CVAT with the Nuclio function ``function_id`` and wait for it to finish."""
    pbar = pbar or NullProgressReporter()
    require_images(client.get_task(task_id))  # a missing task is a clear 404 here; CVAT's label list answers 500
    function = _detector(client, function_id)
    _check_labels(client, task_id, function)
    before = len(client.get_annotations(task_id).get("shapes", []))
    try:
        request = client.start_auto_annotation(task_id, function_id, threshold=threshold, cleanup=clear_existing)
    except ConflictError as e:
        raise AnnotateError(f"an automatic annotation of task {task_id} is already running in CVAT"
                            f"{_describe_running(client, task_id)}; wait for it to finish, or cancel it from the "
                            f"task's page in CVAT, then run this again") from e
    logger.info("Automatic annotation of task %d with %s: request %s", task_id, function_id, request.get("id"))
    request = _follow(client, request, pbar=pbar, poll_interval=poll_interval, timeout=timeout, sleep=sleep)
    if request.get("status") == "failed":
        reason = (request.get("exc_info") or "").strip().splitlines()[-1:] or ["no reason given"]
        raise AnnotateError(f"CVAT's automatic annotation of task {task_id} with {function_id!r} failed: "
                            f"{reason[0]}; check the function's logs (`docker logs nuclio-nuclio-{function_id}`) "
                            f"and CVAT's worker logs (cvat_worker_annotation), then retry")
    after = len(client.get_annotations(task_id).get("shapes", []))
    return AnnotationResult(task_id, function_id, 0 if clear_existing else before, after)


def _detector(client: CvatClient, function_id: str) -> dict:
    try:
        function = client.get_function(function_id)
    except NotFoundError as e:
        raise UnknownFunction(f"CVAT at {client.url} offers no model {function_id!r}: publish it with `cvat-detr "
                            f"publish`, check the name with `cvat-detr models`, or check that CVAT's serverless "
                            f"part lists the functions of project 'cvat'") from e
    if function.get("kind") != "detector":
        raise AnnotateError(f"{function_id!r} is a CVAT {function.get('kind')} function, not a detector; pick a "
                            f"detector (see `cvat-detr models`)")
    return function


def _check_labels(client: CvatClient, task_id: int, function: dict) -> None:
    """CVAT drops detections whose label the task lacks: none in common means nothing would be saved."""
    model_labels = [label["name"] for label in function.get("labels_v2", [])]
    task_labels = {label["name"] for label in client.get_labels(task_id)}
    unmatched = [name for name in model_labels if name not in task_labels]
    if model_labels and len(unmatched) == len(model_labels):
        raise AnnotateError(f"none of the labels of {function['id']!r} ({', '.join(model_labels)}) is a label of "
                            f"task {task_id} ({', '.join(sorted(task_labels)) or 'no labels'}); CVAT matches them "
                            f"by name: add the labels to the task, or pick a model trained on such a task")
    if unmatched:
        logger.warning("Task %d has no label %s: CVAT drops those detections", task_id,
                       ", ".join(map(repr, unmatched)))


def _describe_running(client: CvatClient, task_id: int) -> str:
    for request in client.list_auto_annotations():
        if (request.get("function") or {}).get("task") == task_id and request.get("status") in ("queued", "started"):
            progress = request.get("progress")
            return (f" (request {request.get('id')!r}, model {(request.get('function') or {}).get('id')!r}, "
                    f"{request.get('status')}{f', {progress}%' if progress is not None else ''})")
    return ""


def _follow(client: CvatClient, request: dict, *, pbar: ProgressReporter, poll_interval: float, timeout: float,
            sleep: Callable[[float], None]) -> dict:
    """Poll the request until it is ``finished`` or ``failed``, reporting progress in percent."""
    deadline = time.monotonic() + timeout
    done = 0
    with pbar.task(100, desc="Annotating", unit="%"):
        while request.get("status") not in ("finished", "failed"):
            if time.monotonic() > deadline:
                raise AnnotateError(f"automatic annotation request {request.get('id')!r} is still "
                                    f"{request.get('status')} after {timeout:.0f} s; it goes on in CVAT: follow it on "
                                    f"the task's page, or wait longer with --timeout")
            sleep(poll_interval)
            request = client.get_auto_annotation(request["id"])
            progress = int(request.get("progress") or 0)
            if progress > done:
                pbar.advance(progress - done)
                done = progress
    return request


def annotate_locally(
    client: CvatClient,
    task_id: int,
    model_path: Path,
    *,
    threshold: Optional[float] = None,
    clear_existing: bool = False,
    sdk_pbar: Any = None,
) -> AnnotationResult:
    """Annotate the task with the model running in this process, through cvat-sdk's driver.

    ``sdk_pbar`` is a cvat-sdk progress reporter (None: no progress). Labels of the model that
    the task lacks are skipped, as CVAT does for functions.
    """
    try:
        from cvat_sdk.auto_annotation import annotate_task
    except ModuleNotFoundError as e:
        raise AnnotateError("local annotation runs through cvat-sdk, which is not installed: "
                            "`pip install 'cvat-detr[cvat]'`, or annotate through CVAT without --local") from e
    from cvat_plugin.cvat.sdk_function import DetrDetectionFunction

    require_images(client.get_task(task_id))
    function = DetrDetectionFunction(str(model_path))
    before = len(client.get_annotations(task_id).get("shapes", []))
    with tempfile.TemporaryDirectory(prefix="cvat-detr-frames-") as cache, \
            sdk_client(client.url, client.credentials, Path(cache)) as sdk:
        annotate_task(sdk, task_id, function, pbar=sdk_pbar, clear_existing=clear_existing,
                      allow_unmatched_labels=True, conf_threshold=threshold)
    after = len(client.get_annotations(task_id).get("shapes", []))
    return AnnotationResult(task_id, str(model_path), 0 if clear_existing else before, after)


def sdk_client(url: str, credentials: Optional[Credentials], cache_dir: Path):
    """A cvat-sdk client with the same credentials as ours; frames are cached in ``cache_dir``."""
    from cvat_sdk import Client, Config

    client = Client(url, config=Config(cache_dir=cache_dir))
    if isinstance(credentials, PasswordCredentials):
        client.login((credentials.username, credentials.password))
    elif isinstance(credentials, (AccessToken, LegacyToken)):
        client.api_client.set_default_header("Authorization", f"{credentials.scheme} {credentials.token}")
    elif credentials is not None:
        client.close()
        raise AnnotateError(f"local annotation cannot use {credentials.describe()}; pass --token, "
                            f"--access-token or --username/--password")
    return client
