"""The gateway's configuration, read once from the environment and checked before it serves.

``CVAT_URL`` (required)
    CVAT as the gateway reaches it, e.g. ``http://cvat_server:8080`` on CVAT's compose network.
``DETR_TRAINER_URL`` (required)
    The trainer function's HTTP trigger, e.g. ``http://nuclio-nuclio-detr-trainer:8080``.
``DETR_TRAINER_TOKEN`` (required)
    The trainer's shared token (``cvat_plugin.trainer.auth``); sent to the trainer only, never to a browser.
``DETR_HOME``
    The volume shared with the trainer and the detector (datasets in, models out).
``DETR_WEBHOOK_SECRET``
    The secret given to CVAT's webhook; without it ``POST /webhooks/cvat`` refuses everything.
``DETR_AUTO_RETRAIN_PROJECTS``
    ``all``, or CVAT project ids separated by commas: a task of these projects trains again when
    all its jobs are completed. Unset: off.
``DETR_AUTO_RETRAIN_SCOPE``
    ``task`` (default): retrain the task whose jobs are all completed; ``project``: retrain the whole
    project (its model line) once every job of every task of the project is completed.
``CVAT_ACCESS_TOKEN``, ``CVAT_TOKEN``, or ``CVAT_USERNAME`` + ``CVAT_PASSWORD``
    The service account for webhook-started work (webhooks carry no user). Never used for browser
    requests: those act with the caller's own CVAT session.
``DETR_TRAIN_DEFAULTS``
    A JSON object of training options for every job, any of ``cvat_plugin.training.schema`` (e.g.
    ``{"epochs": 30, "batch_size": 4, "model": {"num_queries": 50}}``); a request's options override
    them, and ``GET /options`` shows them as the defaults. A typo or a bad value stops the gateway at start.
``DETR_GATEWAY_WORKERS``
    How many trainings may be in preparation (export + training set) at once; default 2.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union
from urllib.parse import urlsplit

from cvat_plugin.cvat.auth import Credentials, credentials_from, redact_url
from cvat_plugin.home.layout import detr_home
from cvat_plugin.trainer.auth import TrainerTokenError, token_from_env
from cvat_plugin.training.options import training_setup
from cvat_plugin.training.schema import option, options_in, parse_options
from detr.config import OptionError

#: The options every preparation records, from the request, DETR_TRAIN_DEFAULTS or the schema: the
#: gateway acts on ``weights``, ``val_fraction`` and ``publish`` itself, and a preparing job shows them all.
JOB_DEFAULTS = ("epochs", "image_size", "weights", "val_fraction", "publish")
#: Options the gateway uses itself rather than passing to the trainer.
GATEWAY_OPTIONS = tuple(o.name for o in options_in("gateway"))
DEFAULT_WORKERS = 2


class GatewayConfigError(ValueError):
    """A setting is missing or wrong; the message names the variable and how to fix it."""


@dataclass(frozen=True)
class AutoRetrain:
    """Which CVAT projects retrain when labelling is done, and what retrains: the task whose jobs are
    all completed (``scope`` ``task``), or the project once all its tasks' jobs are (``project``)."""

    all_projects: bool = False
    projects: frozenset[int] = frozenset()
    scope: str = "task"

    @property
    def enabled(self) -> bool:
        return self.all_projects or bool(self.projects)

    def covers(self, project_id: Optional[int]) -> bool:
        return self.all_projects or project_id in self.projects

    @classmethod
    def parse(cls, text: str, scope: str = "") -> "AutoRetrain":
        scope = scope.strip().lower() or "task"
        if scope not in ("task", "project"):
            raise GatewayConfigError(f"DETR_AUTO_RETRAIN_SCOPE={scope!r} is not valid: give 'task' (retrain a task "
                                     f"when its jobs are completed) or 'project' (retrain the project when all "
                                     f"its tasks' jobs are)")
        text = text.strip()
        if not text:
            return cls(scope=scope)
        if text.lower() in ("all", "*"):
            return cls(all_projects=True, scope=scope)
        try:
            return cls(projects=frozenset(int(part) for part in text.replace(" ", "").split(",") if part),
                       scope=scope)
        except ValueError:
            raise GatewayConfigError(f"DETR_AUTO_RETRAIN_PROJECTS={text!r} is not valid: give 'all' or CVAT "
                                     f"project ids separated by commas, e.g. '3,7'") from None


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the gateway needs; ``from_env`` builds it from the variables above."""

    cvat_url: str
    trainer_url: str
    home: Path
    trainer_token: str = field(repr=False)
    webhook_secret: Optional[str] = field(default=None, repr=False)
    service_credentials: Optional[Credentials] = None
    auto_retrain: AutoRetrain = AutoRetrain()
    train_defaults: Mapping[str, Any] = field(default_factory=dict)
    """DETR_TRAIN_DEFAULTS: options of every job (checked at start as requests are); a request's own override them."""
    workers: int = DEFAULT_WORKERS
    export_poll_interval: float = 1.0
    """Seconds between two polls of a running CVAT export."""

    def __post_init__(self) -> None:
        for name, url in (("CVAT_URL", self.cvat_url), ("DETR_TRAINER_URL", self.trainer_url)):
            parts = urlsplit(url or "")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise GatewayConfigError(f"{name}={url!r} is not a URL: give it in full, e.g. http://cvat_server:8080")
        if self.workers < 1:
            raise GatewayConfigError(f"DETR_GATEWAY_WORKERS must be at least 1, got {self.workers}")
        try:  # as every request will be checked, and as the trainer checks them: before any export
            parse_options(self.train_defaults)
            training_setup(self.trainer_defaults)
        except OptionError as e:
            raise GatewayConfigError(f"DETR_TRAIN_DEFAULTS: {e}") from None
        if self.auto_retrain.enabled and not self.webhook_secret:
            raise GatewayConfigError("DETR_AUTO_RETRAIN_PROJECTS is set but DETR_WEBHOOK_SECRET is not: set the "
                                     "secret you gave CVAT's webhook, so that only CVAT can start trainings")
        if self.auto_retrain.enabled and self.service_credentials is None:
            raise GatewayConfigError("DETR_AUTO_RETRAIN_PROJECTS is set but no CVAT service account is: set "
                                     "CVAT_ACCESS_TOKEN, CVAT_TOKEN or CVAT_USERNAME/CVAT_PASSWORD for a user who "
                                     "can see and export the projects' tasks")

    @property
    def job_defaults(self) -> dict[str, Any]:
        """The ``JOB_DEFAULTS`` options of a job that does not set them: DETR_TRAIN_DEFAULTS', else the schema's."""
        return {name: self.train_defaults.get(name, option(name).default) for name in JOB_DEFAULTS}

    @property
    def trainer_defaults(self) -> dict[str, Any]:
        """DETR_TRAIN_DEFAULTS without the options the gateway handles itself."""
        return {key: value for key, value in self.train_defaults.items() if key not in GATEWAY_OPTIONS}

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "GatewaySettings":
        missing = [name for name in ("CVAT_URL", "DETR_TRAINER_URL") if not env.get(name)]
        if missing:
            raise GatewayConfigError(f"{' and '.join(missing)} must be set: CVAT_URL is CVAT as the gateway "
                                     f"reaches it (http://cvat_server:8080 on CVAT's compose network), "
                                     f"DETR_TRAINER_URL the trainer function's HTTP trigger")
        try:
            credentials = credentials_from(env=env)
        except ValueError as e:
            raise GatewayConfigError(f"CVAT service account: {e}") from e
        try:
            token = token_from_env(env, who="the DETR gateway")
        except TrainerTokenError as e:
            raise GatewayConfigError(str(e)) from None
        return cls(
            cvat_url=env["CVAT_URL"],
            trainer_url=env["DETR_TRAINER_URL"],
            home=detr_home(env),
            trainer_token=token,
            webhook_secret=env.get("DETR_WEBHOOK_SECRET") or None,
            service_credentials=credentials,
            auto_retrain=AutoRetrain.parse(env.get("DETR_AUTO_RETRAIN_PROJECTS", ""),
                                           env.get("DETR_AUTO_RETRAIN_SCOPE", "")),
            train_defaults=_json_object(env.get("DETR_TRAIN_DEFAULTS", ""), "DETR_TRAIN_DEFAULTS"),
            workers=_int(env.get("DETR_GATEWAY_WORKERS", ""), "DETR_GATEWAY_WORKERS", DEFAULT_WORKERS),
        )


def _json_object(text: str, name: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise GatewayConfigError(f"{name} is not valid JSON ({e}); give an object such as "
                                 f'{{"epochs": 30, "batch_size": 4}}') from None
    if not isinstance(value, dict):
        raise GatewayConfigError(f'{name} must be a JSON object such as {{"epochs": 30}}, got {text!r}')
    return value


def _int(text: str, name: str, default: int) -> int:
    if not text.strip():
        return default
    try:
        return int(text)
    except ValueError:
        raise GatewayConfigError(f"{name} must be a whole number, got {text!r}") from None


def settings_repr(settings: GatewaySettings) -> str:
    """One log line of the settings, without secrets."""
    service = settings.service_credentials.describe() if settings.service_credentials else "none"
    retrain: Union[str, list[int]] = "all projects" if settings.auto_retrain.all_projects else (
        sorted(settings.auto_retrain.projects) or "off")
    return (f"CVAT {redact_url(settings.cvat_url)}, trainer {redact_url(settings.trainer_url)}, "
            f"DETR_HOME {settings.home}, "
            f"webhook secret {'set' if settings.webhook_secret else 'not set'}, service account: {service}, "
            f"auto-retrain: {retrain} (by {settings.auto_retrain.scope}), preparation workers: {settings.workers}")
