"""How failures become the gateway's answers: ``{"error": "<what happened and what to do>"}``
with a status the UI plugin understands (``cvat_plugin/ui/src/ts/errors.ts``).

    GatewayError     an answer to give: ``status``, ``message`` and extra JSON keys (a 409's ``job``)

CVAT's 401, 403 and 404 pass through with CVAT's own reason; CVAT or the trainer being
unreachable is a 503, failing a 502. Messages name neither credentials nor cookies.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from cvat_plugin.cvat.auth import Credentials, ForwardedAuthorization
from cvat_plugin.cvat.client import CvatConnectionError, CvatError, CvatHTTPError
from cvat_plugin.cvat.dataset import TrainingSetError
from cvat_plugin.trainer.client import TrainerError, TrainerRequestError, TrainerUnavailable

logger = logging.getLogger(__name__)


class GatewayError(Exception):
    """An answer with a non-2xx status; ``extra`` keys are added to the JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


def _said(detail: str) -> str:
    return f" (CVAT said: {detail.rstrip('.')})" if detail else ""


def from_cvat(error: CvatError, *, action: str, credentials: Optional[Credentials] = None) -> GatewayError:
    """CVAT's answer to the caller, e.g. ``action="see task 5"``; 401/403/404 keep their status.
    ``credentials``: what the caller sent, so that a refused ``Authorization`` header is not called a session."""
    if isinstance(error, CvatConnectionError):
        return GatewayError(503, "the DETR service cannot reach CVAT right now; try again in a minute, or ask a "
                                 "CVAT admin to check that CVAT is running and the gateway's CVAT_URL")
    if not isinstance(error, CvatHTTPError):
        return GatewayError(502, str(error))
    said = _said(error.detail)
    if error.status == 401 and isinstance(credentials, ForwardedAuthorization):
        return GatewayError(401, f"CVAT did not accept {credentials.describe()}{said}: check the token the "
                                 f"request sends (an API key as 'Authorization: Token <key>')")
    if error.status == 401:
        return GatewayError(401, f"CVAT did not accept your session{said}: log in to CVAT again")
    if error.status == 403:
        return GatewayError(403, f"CVAT does not let you {action}{said}; ask the task owner or a CVAT admin "
                                 f"for access")
    if error.status == 404:
        return GatewayError(404, f"CVAT cannot {action}: it does not exist{said}; check the task id")
    return GatewayError(502, f"CVAT failed to let you {action}: HTTP {error.status}{said}; try again later, "
                             f"or ask a CVAT admin to check CVAT's logs")


def from_trainer(error: TrainerError) -> GatewayError:
    """The trainer's refusal with its own reason; unreachable -> 503, failing -> 502."""
    if isinstance(error, TrainerUnavailable):
        return GatewayError(503, "the DETR trainer is not available right now; try again in a minute, or ask a "
                                 "CVAT admin to check the detr-trainer function (`nuctl get functions`)")
    if isinstance(error, TrainerRequestError):
        if error.status == 401:  # the gateway's token, not the caller's session: never a 401 to the browser
            return GatewayError(502, "the DETR trainer does not accept the gateway's token; ask a CVAT admin to "
                                     "give the gateway the trainer's DETR_TRAINER_TOKEN (deploy/deploy.sh keeps it "
                                     "in CVAT's .env)")
        reason = error.body.get("error") if isinstance(error.body, dict) else None
        reason = reason or str(error)
        if 400 <= error.status < 500:
            return GatewayError(error.status, f"the DETR trainer refused: {reason}")
        return GatewayError(502, f"the DETR trainer failed (HTTP {error.status}): {reason}; ask a CVAT admin "
                                 f"to check the detr-trainer function's logs")
    return GatewayError(502, str(error))


def failure_message(error: Exception, *, source: str) -> str:
    """A failed preparation of ``source`` ("task 5", "project 2") in words, for the job's ``error``;
    unexpected errors are logged with a traceback."""
    if isinstance(error, CvatHTTPError) and error.status in (401, 403, 404):
        return from_cvat(error, action=f"export {source}").message
    if isinstance(error, CvatConnectionError):
        return from_cvat(error, action=f"export {source}").message
    if isinstance(error, TrainerError):
        return from_trainer(error).message
    if isinstance(error, (CvatError, TrainingSetError, GatewayError)):
        return str(error)
    logger.error("Preparing a training of %s failed unexpectedly", source, exc_info=error)
    return (f"unexpected error while preparing the training ({type(error).__name__}: {error}); ask a CVAT admin "
            f"to check the DETR gateway's log")
