"""Exit codes of ``cvat-detr``, in one place, and the errors each one stands for."""

from __future__ import annotations

import sys
from typing import Optional

from cvat_plugin.cvat.annotate import (
    AnnotateError,
    UnknownFunction,
)
from cvat_plugin.cvat.client import (
    AuthenticationError,
    CvatConnectionError,
    CvatError,
    CvatHTTPError,
    NotFoundError,
    PermissionDeniedError,
)
from cvat_plugin.cvat.dataset import TrainingSetError
from cvat_plugin.home.jobs import JobNotFound
from cvat_plugin.home.models import ModelNotFound
from cvat_plugin.nuclio.client import (
    DashboardUnreachable,
    FunctionNotFound,
    NuclioError,
)
from cvat_plugin.nuclio.publish import (
    PublishError,
)
from detr.config import ConfigError, OptionError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_UNREACHABLE = 5
EXIT_EXPORT = 6
EXIT_DATA = 7
EXIT_TRAINING = 8
EXIT_PUBLISH = 9
EXIT_ANNOTATE = 10
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    unexpected error (a bug: please report it with the traceback)
  {EXIT_USAGE}    bad command line or options
  {EXIT_AUTH}    CVAT rejected the credentials (401) or the user has no access (403)
  {EXIT_NOT_FOUND}    the task, project, model, function or job does not exist (404)
  {EXIT_UNREACHABLE}    CVAT or the Nuclio dashboard unreachable or failing (connection errors, timeouts,
       429/5xx after retries)
  {EXIT_EXPORT}    the export failed, timed out or its download was incomplete
  {EXIT_DATA}    the task cannot make a training set (no images, no boxes, unreadable export)
  {EXIT_TRAINING}    training failed
  {EXIT_PUBLISH}    publishing failed (no base detector function, deploy error or timeout)
  {EXIT_ANNOTATE}   automatic annotation failed, timed out, or one is already running on the task
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); a training run keeps its last checkpoint

environment: CVAT_URL, CVAT_ACCESS_TOKEN, CVAT_TOKEN, CVAT_USERNAME, CVAT_PASSWORD, DETR_HOME,
  DETR_TRAINER_URL, NUCLIO_DASHBOARD_URL, NUCLIO_NAMESPACE, DETR_BASE_FUNCTION, DETR_PUBLISH_DEVICE"""


class UsageError(Exception):
    """The command line is wrong; the message names the option to fix."""


class TrainerJobFailed(Exception):
    """The trainer ran the job and it failed; the message is the trainer's."""




def exit_code(error: BaseException) -> Optional[int]:
    """The exit code of an error the commands expect (its message says what to do); None for a bug."""
    from cvat_plugin.trainer.client import TrainerError, TrainerUnavailable

    # The engine's errors come from modules that load torch: only a command that ran them can raise them.
    TrainingError = _loaded("detr.train", "TrainingError")
    EngineDatasetError = _loaded("detr.data", "DatasetError")
    if isinstance(error, (UsageError, OptionError)):
        return EXIT_USAGE
    if isinstance(error, (AuthenticationError, PermissionDeniedError)):
        return EXIT_AUTH
    if isinstance(error, (NotFoundError, ModelNotFound, FunctionNotFound, JobNotFound, UnknownFunction)):
        return EXIT_NOT_FOUND
    if isinstance(error, (CvatConnectionError, DashboardUnreachable)) or (
            isinstance(error, CvatHTTPError) and (error.status >= 500 or error.status == 429)):
        return EXIT_UNREACHABLE
    if isinstance(error, CvatError):
        return EXIT_EXPORT
    if isinstance(error, (TrainingSetError, EngineDatasetError)):
        return EXIT_DATA
    if isinstance(error, TrainerUnavailable):
        return EXIT_UNREACHABLE
    if isinstance(error, (TrainingError, ConfigError, TrainerJobFailed, TrainerError)):
        return EXIT_TRAINING
    if isinstance(error, (PublishError, NuclioError)):
        return EXIT_PUBLISH
    if isinstance(error, AnnotateError):
        return EXIT_ANNOTATE
    return None


#: How the error line starts, by exit code (default "error").
FAILURES = {EXIT_TRAINING: "training failed", EXIT_PUBLISH: "publishing failed"}


class _NeverRaised(Exception):
    """Stands for an error class whose module never ran."""


def _loaded(module: str, name: str) -> type[BaseException]:
    """``module.name`` if that module was imported, without importing it (and torch) otherwise."""
    return getattr(sys.modules.get(module), name, _NeverRaised)
