"""A fake CVAT server for tests: a real HTTP server on 127.0.0.1 that speaks the part of
CVAT's REST API the product uses, as ``shared/reference/cvat.md`` describes it.

It declares CVAT 2.42.0 unless told otherwise; the version switches behaviour exactly
where the reference says CVAT does: the ``POST .../dataset/export`` + ``/api/requests``
flow exists from 2.16, the legacy ``GET .../dataset?format=`` 202/201 flow until 2.31 and
answers 410 from 2.32, personal access tokens (``Bearer``) work only after 2.42.

State is plain dataclasses (users, tasks with labels, frames, shapes, tags, jobs; export
requests; auto-annotation requests), so later tests can add endpoints on the same model.
Frames are served as CVAT's image chunks (what cvat-sdk's auto-annotation downloads).
With ``connect_nuclio(dashboard_url)`` the lambda API lists and runs the functions of a
Nuclio dashboard (``tests.fakes.cvat_lambda``).
Faults (5xx/429 answers, cut-off downloads) are injected with ``fail()`` and
``truncate_downloads``. Every request is recorded in ``log`` as ``(method, path, status)``.

Usage::

    with FakeCvat(tmp_path) as cvat:
        alice = cvat.add_user("alice", "secret")
        task = cvat.add_task("cars", owner=alice, labels=["car", "person"], frames=[...], shapes=[...])
        client = CvatClient(cvat.url, LegacyToken(alice.token))
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import secrets
import string
import threading
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Iterator, Optional, Union
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import pytest

from tests.fakes.cvat_export import export_task_zip
from tests.fakes.cvat_lambda import LambdaError, LambdaRequest, NuclioGateway, compatible
from tests.fakes.serving import ServedFake, utc_now

SHAPE_TYPES = ("rectangle", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton")
#: Export formats the fake knows (a subset of ``GET /api/server/annotation/formats`` on 2.42).
EXPORT_FORMATS = ("COCO 1.0", "CVAT for images 1.1", "Datumaro 1.0", "YOLO 1.1")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
#: Django's CSRF token alphabet and secret length (``django/middleware/csrf.py``).
CSRF_CHARS = string.ascii_letters + string.digits
CSRF_SECRET_LENGTH = 32
#: Frames per data chunk (``data_chunk_size``): an image chunk is a zip of this many frames.
CHUNK_SIZE = 72
JSON_TYPE = "application/vnd.cvat+json"
#: The export request ids 2.42 makes (``action=export&target=task&target_id=1&...``); others are malformed.
RQ_ID = re.compile(r"action=[a-z]+&target=[a-z]+&target_id=\d+(&[a-z_]+=[^&]*)*")
#: Django's own error pages, which CVAT sends where a view fails outside DRF's error handling.
_DJANGO_PAGE = ('<!doctype html>\n<html lang="en">\n<head>\n  <title>{0}</title>\n</head>\n<body>\n'
                '  <h1>{0}</h1><p></p>\n</body>\n</html>\n')
SERVER_ERROR_PAGE = _DJANGO_PAGE.format("Server Error (500)")
NOT_FOUND_PAGE = _DJANGO_PAGE.format("Not Found")
BAD_REQUEST_PAGE = _DJANGO_PAGE.format("Bad Request (400)")


# --- state ----------------------------------------------------------------------------------------


@dataclass
class User:
    id: int
    username: str
    password: str
    token: str
    """Legacy API key (``Authorization: Token``)."""
    access_token: str
    """Personal access token (``Authorization: Bearer``), honoured only on servers newer than 2.42."""
    is_superuser: bool = False

    def brief(self, base: str) -> dict:
        return {"url": f"{base}/api/users/{self.id}", "id": self.id, "username": self.username,
                "first_name": "", "last_name": ""}


@dataclass
class Label:
    id: int
    name: str
    type: str = "any"
    color: str = "#33ddff"
    attributes: list = field(default_factory=list)
    parent_id: Optional[int] = None


@dataclass
class Frame:
    name: str
    """Path as uploaded, may contain folders and non-ASCII characters."""
    width: int
    height: int
    data: bytes
    """The encoded image file."""


@dataclass
class Shape:
    type: str
    frame: int
    label_id: int
    points: list
    rotation: float = 0.0
    occluded: bool = False
    z_order: int = 0
    group: Optional[int] = 0
    """None on shapes that automatic annotation saved, as 2.42 stores them."""
    source: str = "manual"
    attributes: list = field(default_factory=list)
    elements: list = field(default_factory=list)
    id: int = 0

    def to_json(self) -> dict:
        return {"id": self.id, "type": self.type, "frame": self.frame, "label_id": self.label_id,
                "group": self.group, "source": self.source, "attributes": self.attributes,
                "occluded": self.occluded, "outside": False, "z_order": self.z_order,
                "rotation": self.rotation, "points": self.points, "elements": self.elements}


@dataclass
class Tag:
    frame: int
    label_id: int
    group: Optional[int] = 0
    source: str = "manual"
    attributes: list = field(default_factory=list)
    id: int = 0

    def to_json(self) -> dict:
        return {"id": self.id, "frame": self.frame, "label_id": self.label_id, "group": self.group,
                "source": self.source, "attributes": self.attributes}


@dataclass
class Job:
    id: int
    task_id: int
    start_frame: int
    stop_frame: int
    state: str = "new"
    stage: str = "annotation"


@dataclass
class Task:
    id: int
    name: str
    owner: User
    labels: list[Label]
    frames: list[Frame]
    shapes: list[Shape] = field(default_factory=list)
    tags: list[Tag] = field(default_factory=list)
    tracks: list[dict] = field(default_factory=list)
    """Stored and returned as given; the fake's export does not interpolate them."""
    subset: str = ""
    deleted_frames: set[int] = field(default_factory=set)
    members: set[str] = field(default_factory=set)
    """User names besides the owner (assignees of the task or its jobs) who may see the task."""
    assignee: Optional[User] = None
    """The task's assignee: may see and change it."""
    organization: Optional[int] = None
    """The organization the task belongs to; its members see it, its maintainers and owner change it."""
    jobs: list[Job] = field(default_factory=list)
    export_error: Optional[str] = None
    """When set, every export of this task fails with this message."""
    project_id: Optional[int] = None
    created: str = field(default_factory=utc_now)

    def top_labels(self) -> list[Label]:
        return [label for label in self.labels if label.parent_id is None]

    def label_ids(self) -> set[int]:
        return {label.id for label in self.labels}


@dataclass
class Project:
    """Tasks that share the project's labels (same ids); each task has its own one subset."""

    id: int
    name: str
    owner: User
    labels: list[Label]
    created: str = field(default_factory=utc_now)
    assignee: Optional[User] = None


@dataclass
class ExportRequest:
    """A background export, as RQ holds it: advances one state per poll."""

    id: str
    task_id: int
    owner: User
    format: str
    save_images: bool
    status: str = "queued"
    polls: int = 0
    message: str = ""
    file: Optional[Path] = None
    created: str = field(default_factory=utc_now)
    started: Optional[str] = None
    finished: Optional[str] = None


@dataclass
class Fault:
    method: str
    path: re.Pattern
    status: int
    times: int
    body: Any = None
    headers: dict = field(default_factory=dict)


class HttpError(Exception):
    def __init__(self, status: int, body: Any, *, content_type: str = JSON_TYPE, headers: Optional[dict] = None):
        super().__init__(status)
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers or {}


def _csrf_secret(token: str) -> Optional[str]:
    """Django's ``_check_token_format`` + ``_unmask_cipher_token``: a 32-character secret as is, a
    64-character token unmasked (its first half is the mask); None when malformed."""
    if any(char not in CSRF_CHARS for char in token):
        return None
    if len(token) == 2 * CSRF_SECRET_LENGTH:
        mask, cipher = token[:CSRF_SECRET_LENGTH], token[CSRF_SECRET_LENGTH:]
        return "".join(CSRF_CHARS[(CSRF_CHARS.index(c) - CSRF_CHARS.index(m)) % len(CSRF_CHARS)]
                       for c, m in zip(cipher, mask))
    return token if len(token) == CSRF_SECRET_LENGTH else None


def _version_tuple(text: str) -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in re.findall(r"\d+", text)[:3])
    return major, minor, patch


# --- the server ---------------------------------------------------------------------------------------


class FakeCvat(ServedFake):
    """The fake server and its state. Start it with ``start()`` or a ``with`` block."""

    def __init__(
        self,
        workdir: Union[str, Path],
        *,
        version: str = "2.42.0",
        polls_per_state: int = 1,
        export_includes_deleted: Optional[bool] = None,
    ) -> None:
        """``polls_per_state``: polls a request spends in ``queued`` and in ``started``.
        ``export_includes_deleted``: whether exports keep deleted frames (issue #8222: 2.14-2.17 did,
        2.42 does not); by default decided by the version."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.version = version
        self.version_tuple = _version_tuple(version)
        self.polls_per_state = polls_per_state
        self.export_includes_deleted = (self.version_tuple < (2, 18) if export_includes_deleted is None
                                        else export_includes_deleted)
        self.users: dict[int, User] = {}
        self.tasks: dict[int, Task] = {}
        self.projects: dict[int, Project] = {}
        self.memberships: dict[tuple[int, str], str] = {}
        """(organization id, user name) -> role: worker, supervisor, maintainer or owner."""
        self.requests: dict[str, ExportRequest] = {}
        self.sessions: dict[str, tuple[User, str]] = {}
        """sessionid -> (user, csrftoken)"""
        self.faults: list[Fault] = []
        self.nuclio = NuclioGateway(None)
        """Serverless is off until ``connect_nuclio``: lambda calls answer 503, as CVAT without Nuclio does."""
        self.lambda_requests: dict[int, LambdaRequest] = {}
        """Auto-annotation requests by task id (RQ keys them by task)."""
        self.truncate_downloads = 0
        """The next this many downloads send half the file and close the connection."""
        self.log: list[tuple[str, str, int]] = []
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self._label_ids = itertools.count(1001)

    # -- lifecycle --

    thread_name = "fake-cvat"

    @property
    def handler_class(self) -> type:
        return _Handler

    # -- building state --

    def next_id(self) -> int:
        return next(self._ids)

    def add_user(self, username: str, password: str, *, superuser: bool = False) -> User:
        user = User(self.next_id(), username, password, token=secrets.token_hex(20),
                    access_token=secrets.token_urlsafe(32), is_superuser=superuser)
        self.users[user.id] = user
        return user

    def _labels(self, labels: list[Union[str, dict]]) -> list[Label]:
        made = []
        for spec in labels:
            spec = {"name": spec} if isinstance(spec, str) else dict(spec)
            spec.setdefault("id", next(self._label_ids))
            made.append(Label(**spec))
        return made

    def add_project(self, name: str, *, owner: User, labels: list[Union[str, dict]]) -> Project:
        """Labels as for ``add_task``; the project's tasks (``add_task(project=...)``) share them."""
        project = Project(self.next_id(), name, owner, self._labels(labels))
        self.projects[project.id] = project
        return project

    def add_task(
        self,
        name: str,
        *,
        owner: User,
        labels: list[Union[str, dict]] = (),
        frames: list[Frame],
        shapes: list[Shape] = (),
        tags: list[Tag] = (),
        subset: str = "",
        deleted_frames: tuple[int, ...] = (),
        members: tuple[str, ...] = (),
        segment_size: int = 0,
        project: Optional[Project] = None,
    ) -> Task:
        """Labels are names or dicts of ``Label`` fields (``id`` picks a sparse CVAT id); a project's
        task has the project's labels instead. Shapes and tags refer to labels by ``label_id``; a
        negative ``label_id`` ``-k`` means the k-th label."""
        if project is not None and labels:
            raise ValueError("a project's task has the project's labels; pass no labels")
        task_labels = project.labels if project is not None else self._labels(labels)
        task = Task(self.next_id(), name, owner, task_labels, list(frames), subset=subset,
                    deleted_frames=set(deleted_frames), members=set(members),
                    project_id=project.id if project is not None else None)
        for item in [*shapes, *tags]:
            if item.label_id < 0:
                item.label_id = task_labels[-item.label_id - 1].id
            item.id = self.next_id()
        task.shapes, task.tags = list(shapes), list(tags)
        size = segment_size or max(len(frames), 1)
        for start in range(0, len(frames), size):
            task.jobs.append(Job(self.next_id(), task.id, start, min(start + size, len(frames)) - 1))
        self.tasks[task.id] = task
        return task

    def fail(self, method: str, path: str, status: int, *, times: int = 1, body: Any = None,
             headers: Optional[dict] = None) -> None:
        """Answer the next ``times`` requests matching ``method`` and the ``path`` regex with ``status``."""
        self.faults.append(Fault(method, re.compile(path), status, times,
                                 body if body is not None else {"detail": HTTPStatus(status).phrase}, headers or {}))

    def count(self, method: str, path: str) -> int:
        """How many requests matched ``method`` and the ``path`` regex."""
        return sum(1 for m, p, _ in self.log if m == method and re.fullmatch(path, p))

    # -- auth --

    def authenticate(self, handler: "_Handler") -> Optional[User]:
        """DRF's order on 2.42: Token, (Signature), Session, Basic; Bearer only after 2.42."""
        header = handler.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        unauthorized = {"WWW-Authenticate": "Token"}
        if scheme == "token":
            for user in self.users.values():
                if secrets.compare_digest(user.token, value.strip()):
                    return user
            raise HttpError(401, {"detail": "Invalid token."}, headers=unauthorized)
        if scheme == "bearer" and self.version_tuple > (2, 42, 99):
            for user in self.users.values():
                if secrets.compare_digest(user.access_token, value.strip()):
                    return user
            raise HttpError(401, {"detail": "Invalid token."}, headers=unauthorized)
        cookies = handler.cookies()
        session = self.sessions.get(cookies.get("sessionid", ""))
        if session is not None:
            user, csrftoken = session
            if handler.command in UNSAFE_METHODS and not (
                _csrf_secret(cookies.get("csrftoken", "")) == csrftoken
                and _csrf_secret(handler.headers.get("X-CSRFToken", "")) == csrftoken
            ):
                raise HttpError(403, {"detail": "CSRF Failed: CSRF token missing or incorrect."})
            return user
        if scheme == "basic":
            try:
                username, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                raise HttpError(401, {"detail": "Invalid basic header."}, headers=unauthorized) from None
            for user in self.users.values():
                if user.username == username and secrets.compare_digest(user.password, password):
                    return user
            raise HttpError(401, {"detail": "Invalid username/password."}, headers=unauthorized)
        return None

    def task_for(self, user: User, task_id: int) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise HttpError(404, {"detail": "No Task matches the given query."})
        project = self.projects.get(task.project_id) if task.project_id else None
        if not (user.is_superuser or task.owner.id == user.id or user.username in task.members
                or (task.assignee is not None and task.assignee.id == user.id)
                or (task.organization is not None and (task.organization, user.username) in self.memberships)
                or (project is not None and user.id in (project.owner.id, getattr(project.assignee, "id", None)))):
            raise HttpError(403, {"detail": "You do not have permission to perform this action."})
        return task

    def project_for(self, user: User, project_id: int) -> Project:
        project = self.projects.get(project_id)
        if project is None:
            raise HttpError(404, {"detail": "No Project matches the given query."})
        if not (user.is_superuser or user.id in (project.owner.id, getattr(project.assignee, "id", None))):
            raise HttpError(403, {"detail": "You do not have permission to perform this action."})
        return project

    # -- auto-annotation --

    def connect_nuclio(self, url: str, namespace: str = "nuclio") -> None:
        """Turn serverless on: list and invoke the functions of the Nuclio dashboard at ``url``."""
        self.nuclio = NuclioGateway(url, namespace)

    def advance_lambda(self, request: LambdaRequest) -> None:
        """One poll's worth of the auto-annotation worker; the shapes are saved when it finishes."""
        task = self.tasks[request.task_id]
        if request.status == "queued" and request.cleanup:
            task.shapes, task.tags, task.tracks = [], [], []
        request.step(self.nuclio, [frame.data for frame in task.frames])
        if request.status == "finished":
            label_ids = {label.name: label.id for label in task.top_labels()}
            for item in request.results:
                if item["type"] == "tag":
                    task.tags.append(Tag(item["frame"], label_ids[item["label"]], group=None, source="auto",
                                         id=self.next_id()))
                else:
                    task.shapes.append(Shape(item["type"], item["frame"], label_ids[item["label"]],
                                             list(item["points"]), rotation=float(item.get("rotation", 0)),
                                             group=None, source="auto", id=self.next_id()))
            request.results = []

    # -- exports --

    def export_file(self, task: Task, save_images: bool) -> Path:
        path = self.workdir / f"task_{task.id}_{self.next_id()}.zip"
        return export_task_zip(task, path, save_images=save_images, include_deleted=self.export_includes_deleted)

    def advance(self, request: ExportRequest) -> None:
        """One poll's worth of background work: queued -> started -> finished | failed. With
        ``polls_per_state=0`` a request goes through every state at once, finished on its first poll
        as a small export is on a real server."""
        request.polls += 1
        if request.status == "queued" and request.polls > self.polls_per_state:
            request.status, request.started, request.polls = "started", utc_now(), 0
            if self.polls_per_state:
                return
            request.polls = 1
        if request.status == "started" and request.polls > self.polls_per_state:
            task = self.tasks[request.task_id]
            if task.export_error:
                request.status, request.message = "failed", task.export_error
            else:
                request.file = self.export_file(task, request.save_images)
                request.status = "finished"
            request.finished = utc_now()


class _Handler(BaseHTTPRequestHandler):
    server_version = "nginx"

    @property
    def fake(self) -> FakeCvat:
        return self.server.fake  # type: ignore[attr-defined]

    # The table of endpoints: (method, path regex, handler name, minimum version, maximum version).
    ROUTES = [
        ("GET", r"/api/server/about", "about", None, None),
        ("POST", r"/api/auth/login", "login", None, None),
        ("POST", r"/api/auth/logout", "logout", None, None),
        ("GET", r"/api/users/self", "users_self", None, None),
        ("GET", r"/api/memberships", "memberships", None, None),
        ("GET", r"/api/tasks/(\d+)", "task", None, None),
        ("GET", r"/api/tasks", "tasks", None, None),
        ("GET", r"/api/projects/(\d+)", "project", None, None),
        ("GET", r"/api/labels", "labels", None, None),
        ("GET", r"/api/jobs", "jobs", None, None),
        ("GET", r"/api/tasks/(\d+)/data/meta", "data_meta", None, None),
        ("GET", r"/api/tasks/(\d+)/data", "task_data", None, None),
        ("GET", r"/api/lambda/functions", "lambda_functions", None, None),
        ("GET", r"/api/lambda/functions/([a-zA-Z0-9_.-]+)", "lambda_function", None, None),
        ("GET|POST", r"/api/lambda/requests", "lambda_requests", None, None),
        ("GET|DELETE", r"/api/lambda/requests/(.+)", "lambda_request", None, None),
        ("GET|PUT|PATCH|DELETE", r"/api/tasks/(\d+)/annotations", "annotations", None, None),
        ("POST", r"/api/tasks/(\d+)/dataset/export", "export_start", (2, 16), None),
        ("GET", r"/api/requests/(.+)", "request_status", (2, 16), None),
        ("GET", r"/api/tasks/(\d+)/dataset/download", "export_download", (2, 16), None),
        ("GET", r"/api/tasks/(\d+)/dataset", "legacy_export", None, None),
    ]
    ANONYMOUS = ("about", "login")

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # -- plumbing --

    @property
    def base(self) -> str:
        return self.fake.url

    def cookies(self) -> dict[str, str]:
        jar = {}
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name:
                jar[name] = value
        return jar

    def body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise HttpError(400, {"detail": "JSON parse error"}) from None

    def _start_response(self, status: int) -> None:
        """Record the request in the log before the client can see the answer, then start it."""
        self._status = status
        self.fake.log.append((self.command, self._path, status))
        self.send_response(status)

    def _send(self, status: int, body: Any = None, *, content_type: str = JSON_TYPE,
              headers: Union[dict, list[tuple[str, str]], None] = None) -> None:
        data = body if isinstance(body, bytes) else (
            b"" if body is None else (body.encode() if isinstance(body, str) and content_type != JSON_TYPE
                                      else json.dumps(body).encode()))
        self._start_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers.items() if isinstance(headers, dict) else headers or []):
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        path = self._path = parts.path.rstrip("/") or "/"
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self._status = None
        try:
            with fake.lock:
                for fault in fake.faults:
                    if fault.times > 0 and fault.method == self.command and fault.path.fullmatch(path):
                        fault.times -= 1
                        raise HttpError(fault.status, fault.body, headers=fault.headers)
            accept = self.headers.get("Accept", "*/*")
            if accept.strip() == "application/json":  # 2.42 negotiates only its vendor type
                raise HttpError(406, {"detail": "Could not satisfy the request Accept header."})
            for methods, pattern, name, since, until in self.ROUTES:
                match = re.fullmatch(pattern, path)
                if match is None or (since and fake.version_tuple < since):
                    continue
                if self.command not in methods.split("|"):
                    raise HttpError(405, {"detail": f'Method "{self.command}" not allowed.'})
                user = fake.authenticate(self)
                if user is None and name not in self.ANONYMOUS:
                    raise HttpError(401, {"detail": "Authentication credentials were not provided."},
                                    headers={"WWW-Authenticate": "Token"})
                with fake.lock:
                    getattr(self, f"handle_{name}")(user, *[unquote(g) for g in match.groups()])
                return
            raise HttpError(404, NOT_FOUND_PAGE, content_type="text/html")
        except HttpError as e:
            self._send(e.status, e.body, content_type=e.content_type, headers=e.headers)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            if self._status is None:  # died before answering
                fake.log.append((self.command, path, 500))

    # -- endpoints --

    def handle_about(self, user: Optional[User]) -> None:
        self._send(200, {"name": "Computer Vision Annotation Tool", "description": "CVAT (fake)",
                         "version": self.fake.version, "logo_url": f"{self.base}/api/server/logo",
                         "subtitle": "Fake server for tests"})

    def handle_login(self, user: Optional[User]) -> None:
        body = self.body() or {}
        for candidate in self.fake.users.values():
            if candidate.username == body.get("username") and candidate.password == body.get("password"):
                sessionid = secrets.token_hex(16)
                csrftoken = "".join(secrets.choice(CSRF_CHARS) for _ in range(CSRF_SECRET_LENGTH))
                self.fake.sessions[sessionid] = (candidate, csrftoken)
                # Django's order and attributes; clients that join the headers with ", " must still parse them.
                self._send(200, {"key": candidate.token}, headers=[
                    ("Set-Cookie", f"csrftoken={csrftoken}; Max-Age=31449600; Path=/; SameSite=Lax"),
                    ("Set-Cookie", f"sessionid={sessionid}; HttpOnly; Max-Age=1209600; Path=/; SameSite=Lax"),
                    ("Set-Cookie", "sessionfresh=1; Max-Age=1209600; Path=/; SameSite=Lax"),
                ])
                return
        raise HttpError(400, {"non_field_errors": ["Unable to log in with provided credentials."]})

    def handle_logout(self, user: User) -> None:
        self.fake.sessions.pop(self.cookies().get("sessionid", ""), None)
        self._send(200, {"detail": "Successfully logged out."})

    def handle_users_self(self, user: User) -> None:
        self._send(200, {**user.brief(self.base), "email": f"{user.username}@example.com",
                         "groups": ["admin"] if user.is_superuser else ["user"],
                         "is_superuser": user.is_superuser, "is_staff": user.is_superuser, "is_active": True})

    def handle_memberships(self, user: User) -> None:
        """``GET /api/memberships?org_id=&user=``: the caller's own memberships (a plain user sees no others)."""
        results = [{"id": index, "user": member.brief(self.base), "organization": org, "role": role,
                    "is_active": True, "joined_date": None}
                   for index, ((org, username), role) in enumerate(sorted(self.fake.memberships.items()), 1)
                   for member in self.fake.users.values() if member.username == username
                   if (user.is_superuser or username == user.username)
                   and str(org) == self.query.get("org_id", str(org))
                   and username == self.query.get("user", username)]
        self._paginated("/api/memberships", results)

    def _task_json(self, task: Task) -> dict:
        return {
            "url": f"{self.base}/api/tasks/{task.id}", "id": task.id, "name": task.name,
            "project_id": task.project_id, "owner": task.owner.brief(self.base),
            "assignee": task.assignee.brief(self.base) if task.assignee else None, "bug_tracker": "",
            "created_date": task.created, "updated_date": task.created,
            "overlap": 0, "segment_size": len(task.frames), "status": "annotation", "data_chunk_size": CHUNK_SIZE,
            "data_compressed_chunk_type": "imageset", "guide_id": None, "data_original_chunk_type": "imageset",
            "image_quality": 70, "dimension": "2d",
            # a task created without data (the UI's "Submit & Continue" before uploading) has none of these
            "size": len(task.frames) or None, "mode": "annotation" if task.frames else None,
            "data": task.id if task.frames else None,
            "subset": task.subset, "organization": task.organization, "target_storage": None, "source_storage": None,
            "jobs": {"count": len(task.jobs), "completed": 0, "validation": 0,
                     "url": f"{self.base}/api/jobs?task_id={task.id}"},
            "labels": {"url": f"{self.base}/api/labels?task_id={task.id}"},
            "assignee_updated_date": None, "validation_mode": None, "consensus_enabled": False,
        }

    def handle_task(self, user: User, task_id: str) -> None:
        self._send(200, self._task_json(self.fake.task_for(user, int(task_id))))

    def _paginated(self, path: str, results: list[dict]) -> None:
        """DRF's envelope; ``page_size`` defaults to 10; a page past the end is 404 ``Invalid page.``."""
        try:
            page = int(self.query.get("page", 1))
            size = int(self.query.get("page_size", 10))
        except ValueError:
            raise HttpError(404, {"detail": "Invalid page."}) from None
        pages = max(1, -(-len(results) // size))
        if page < 1 or page > pages:
            raise HttpError(404, {"detail": "Invalid page."})

        def link(number: int) -> Optional[str]:
            if number < 1 or number > pages:
                return None
            return f"{self.base}{path}?{urlencode({**self.query, 'page': number}, quote_via=quote)}"

        self._send(200, {"count": len(results), "next": link(page + 1), "previous": link(page - 1),
                         "results": results[(page - 1) * size:page * size]})

    def handle_labels(self, user: User) -> None:
        """``?task_id=`` or ``?project_id=``; a project task's labels are the project's (``project_id``
        set, no ``task_id``)."""
        if "project_id" in self.query:
            project = self.fake.project_for(user, int(self.query["project_id"]))
            labels, project_id, task_id = project.labels, project.id, None
        elif "task_id" in self.query:
            task = self.fake.tasks.get(int(self.query["task_id"]))
            if task is None:  # observed on 2.42: a Django 500 page, not a 404
                raise HttpError(500, SERVER_ERROR_PAGE, content_type="text/html")
            self.fake.task_for(user, task.id)
            labels, project_id = task.labels, task.project_id
            task_id = None if project_id else task.id
        else:
            raise HttpError(400, ["task_id, job_id or project_id is required"])
        self._paginated("/api/labels", [
            {"id": label.id, "name": label.name, "color": label.color, "attributes": label.attributes,
             "type": label.type, "svg": "", "sublabels": [], "project_id": project_id, "task_id": task_id,
             "parent_id": label.parent_id, "has_parent": label.parent_id is not None}
            for label in labels
        ])

    def handle_tasks(self, user: User) -> None:
        """``GET /api/tasks?project_id=N``: the project's tasks the user can see, oldest first."""
        project_id = self.query.get("project_id")
        visible = [task for task in self.fake.tasks.values()
                   if (project_id is None or str(task.project_id) == project_id) and self._can_see(user, task.id)]
        self._paginated("/api/tasks", [self._task_json(task) for task in visible])

    def handle_project(self, user: User, project_id: str) -> None:
        project = self.fake.project_for(user, int(project_id))
        tasks = [task for task in self.fake.tasks.values() if task.project_id == project.id]
        self._send(200, {
            "url": f"{self.base}/api/projects/{project.id}", "id": project.id, "name": project.name,
            "owner": project.owner.brief(self.base),
            "assignee": project.assignee.brief(self.base) if project.assignee else None, "guide_id": None,
            "bug_tracker": "",
            "task_subsets": sorted({task.subset for task in tasks if task.subset}),
            "created_date": project.created, "updated_date": project.created, "status": "annotation",
            "dimension": "2d" if tasks else None, "organization": None, "target_storage": None,
            "source_storage": None, "assignee_updated_date": None,
            "tasks": {"count": len(tasks), "url": f"{self.base}/api/tasks?project_id={project.id}"},
            "labels": {"url": f"{self.base}/api/labels?project_id={project.id}"},
        })

    def handle_jobs(self, user: User) -> None:
        task = self.fake.task_for(user, int(self.query.get("task_id", 0)))
        self._paginated("/api/jobs", [
            {"url": f"{self.base}/api/jobs/{job.id}", "id": job.id, "task_id": job.task_id,
             "project_id": task.project_id, "assignee": None, "guide_id": None, "dimension": "2d",
             "bug_tracker": None, "status": "annotation", "stage": job.stage, "state": job.state,
             "mode": "annotation", "frame_count": job.stop_frame - job.start_frame + 1,
             "start_frame": job.start_frame, "stop_frame": job.stop_frame, "data_chunk_size": CHUNK_SIZE,
             "data_compressed_chunk_type": "imageset", "data_original_chunk_type": "imageset",
             "created_date": task.created, "updated_date": task.created, "type": "annotation",
             "organization": None, "target_storage": None, "source_storage": None,
             "assignee_updated_date": None, "parent_job_id": None, "consensus_replicas": 0,
             "issues": {"count": 0, "url": f"{self.base}/api/issues?job_id={job.id}"},
             "labels": {"url": f"{self.base}/api/labels?job_id={job.id}"}}
            for job in task.jobs
        ])

    def handle_data_meta(self, user: User, task_id: str) -> None:
        task = self.fake.task_for(user, int(task_id))
        if not task.frames:  # observed on 2.42: the view reads the missing data and fails
            raise HttpError(500, SERVER_ERROR_PAGE, content_type="text/html")
        self._send(200, {
            "chunks_updated_date": task.created, "chunk_size": CHUNK_SIZE, "size": len(task.frames),
            "image_quality": 70, "start_frame": 0, "stop_frame": max(len(task.frames) - 1, 0),
            "frame_filter": "", "deleted_frames": sorted(task.deleted_frames), "included_frames": None,
            "frames": [{"width": f.width, "height": f.height, "name": f.name, "related_files": 0,
                        "has_related_context": False} for f in task.frames],
        })

    def handle_task_data(self, user: User, task_id: str) -> None:
        """``?type=frame|chunk&number=N``: one encoded frame, or an image chunk (a zip of frames)."""
        task = self.fake.task_for(user, int(task_id))
        kind, number = self.query.get("type"), int(self.query.get("number", 0))
        if kind == "frame" and 0 <= number < len(task.frames):
            frame = task.frames[number]
            self._send(200, frame.data, content_type="image/png" if frame.name.endswith(".png") else "image/jpeg")
        elif kind == "chunk" and 0 <= number * CHUNK_SIZE < len(task.frames):
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as chunk:
                for index, frame in enumerate(task.frames[number * CHUNK_SIZE:(number + 1) * CHUNK_SIZE]):
                    chunk.writestr(f"{number * CHUNK_SIZE + index:06d}{Path(frame.name).suffix}", frame.data)
            self._send(200, buffer.getvalue(), content_type="application/zip")
        else:
            raise HttpError(400, [f"The frame number or chunk number {number} is out of the task"])

    def handle_annotations(self, user: User, task_id: str) -> None:
        task = self.fake.task_for(user, int(task_id))
        if not task.frames:  # observed on 2.42: a Django 400 page
            raise HttpError(400, BAD_REQUEST_PAGE, content_type="text/html")
        if self.command == "GET" and "format" in self.query:
            self._legacy_flow(user, task, self.query["format"], subresource="annotations")
            return
        if self.command == "PUT":
            shapes, tags = self._parse_labeled_data(task, self.body())
            task.shapes, task.tags = shapes, tags
        elif self.command == "PATCH":
            action = self.query.get("action")
            if action not in ("create", "update", "delete"):
                raise HttpError(400, ["Please specify a correct 'action' for the request"])
            shapes, tags = self._parse_labeled_data(task, self.body(), keep_ids=action != "create")
            if action == "create":  # 2.42 echoes only the objects it created
                task.shapes += shapes
                task.tags += tags
                self._send(200, {"version": 0, "tags": [t.to_json() for t in tags],
                                 "shapes": [s.to_json() for s in shapes], "tracks": []})
                return
            else:
                changed = {item.id for item in [*shapes, *tags]}
                task.shapes = [s for s in task.shapes if s.id not in changed]
                task.tags = [t for t in task.tags if t.id not in changed]
                if action == "update":
                    task.shapes += shapes
                    task.tags += tags
        elif self.command == "DELETE":
            task.shapes, task.tags, task.tracks = [], [], []
            self._send(204)
            return
        self._send(200, {"version": 0, "tags": [t.to_json() for t in task.tags],
                         "shapes": [s.to_json() for s in task.shapes], "tracks": task.tracks})

    def _parse_labeled_data(self, task: Task, body: Any, *, keep_ids: bool = False) -> tuple[list, list]:
        """``LabeledData`` -> shapes and tags, validated as CVAT's serializers do (400 with a list)."""
        if not isinstance(body, dict):
            raise HttpError(400, ["Expected a LabeledData object"])
        shapes, tags = [], []
        for raw in body.get("shapes", []):
            if raw.get("type") not in SHAPE_TYPES:
                raise HttpError(400, {"shapes": [{"type": [f'"{raw.get("type")}" is not a valid choice.']}]})
            if raw.get("label_id") not in task.label_ids():
                raise HttpError(400, [f"Label {raw.get('label_id')} is not from the task"])
            if not 0 <= int(raw.get("frame", -1)) < len(task.frames):
                raise HttpError(400, [f"The frame #{raw.get('frame')} is out of the task"])
            shapes.append(Shape(
                type=raw["type"], frame=int(raw["frame"]), label_id=raw["label_id"], points=list(raw["points"]),
                rotation=float(raw.get("rotation", 0)), occluded=bool(raw.get("occluded", False)),
                z_order=int(raw.get("z_order", 0)), group=raw.get("group") or 0,
                source=raw.get("source", "manual"), attributes=raw.get("attributes", []),
                elements=raw.get("elements", []),
                id=raw["id"] if keep_ids and "id" in raw else self.fake.next_id()))
        for raw in body.get("tags", []):
            if raw.get("label_id") not in task.label_ids():
                raise HttpError(400, [f"Label {raw.get('label_id')} is not from the task"])
            tags.append(Tag(frame=int(raw["frame"]), label_id=raw["label_id"], group=raw.get("group") or 0,
                            source=raw.get("source", "manual"), attributes=raw.get("attributes", []),
                            id=raw["id"] if keep_ids and "id" in raw else self.fake.next_id()))
        return shapes, tags

    # -- lambda: functions and auto-annotation requests (tests.fakes.cvat_lambda) --

    def _lambda(self, status: int, produce) -> None:
        """Answer like the lambda views' ``return_response``: errors are bare strings."""
        try:
            body = produce()
        except LambdaError as e:
            raise HttpError(e.status, e.message) from None
        self._send(status, body)

    def handle_lambda_functions(self, user: User) -> None:
        self._lambda(200, lambda: [function.to_dict() for function in self.fake.nuclio.list()])

    def handle_lambda_function(self, user: User, function_id: str) -> None:
        self._lambda(200, lambda: self.fake.nuclio.get(function_id).to_dict())

    def handle_lambda_requests(self, user: User) -> None:
        if self.command == "GET":
            self._send(200, [request.to_dict() for task_id, request in self.fake.lambda_requests.items()
                             if self._can_see(user, task_id)])
            return
        body = self.body()
        if not isinstance(body, dict):
            raise HttpError(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
        missing = [key for key in ("function", "task") if key not in body]
        if missing:
            raise HttpError(400, {key: ["This field is required."] for key in missing})
        task = self.fake.task_for(user, int(body["task"]))
        self._lambda(200, lambda: self._enqueue(user, task, body).to_dict())

    def _enqueue(self, user: User, task: Task, body: dict) -> LambdaRequest:
        function = self.fake.nuclio.get(str(body["function"]))
        running = self.fake.lambda_requests.get(task.id)
        if running is not None and running.running:
            raise LambdaError(409, f"Only one running request is allowed for the same task #{task.id}")
        labels = {label.name: label for label in task.top_labels()}
        if body.get("mapping"):
            mapping = {model: target["name"] for model, target in body["mapping"].items()}
            unknown = [name for name in mapping.values() if name not in labels]
            if unknown:
                raise LambdaError(400, f'Invalid mapping. Unknown db label "{unknown[0]}"')
        else:
            mapping = {label["name"]: label["name"] for label in function.labels
                       if label["name"] in labels and compatible(label["type"], labels[label["name"]].type)}
        request = LambdaRequest(
            function=function, task_id=task.id, owner_id=user.id, threshold=body.get("threshold"),
            cleanup=bool(body.get("cleanup", False)), mapping=mapping, size=len(task.frames),
            frames=[frame for frame in range(len(task.frames)) if frame not in task.deleted_frames])
        self.fake.lambda_requests[task.id] = request
        return request

    def _can_see(self, user: User, task_id: int) -> bool:
        try:
            self.fake.task_for(user, task_id)
        except HttpError:
            return False
        return True

    def handle_lambda_request(self, user: User, rq_id: str) -> None:
        request = next((r for r in self.fake.lambda_requests.values() if r.id == rq_id), None)
        if request is None or not self._can_see(user, request.task_id):
            raise HttpError(404, f"{rq_id} lambda job is not found")
        if self.command == "DELETE":  # cancels: the worker stops at its next frame
            del self.fake.lambda_requests[request.task_id]
            self._send(204)
            return
        self.fake.advance_lambda(request)
        self._send(200, request.to_dict())

    # -- current export flow (2.16+) --

    def _check_format(self, fmt: Optional[str]) -> str:
        if fmt not in EXPORT_FORMATS:
            raise HttpError(400, ["Unknown format specified for the request"])
        return fmt

    def handle_export_start(self, user: User, task_id: str) -> None:
        task = self.fake.task_for(user, int(task_id))
        fmt = self._check_format(self.query.get("format"))
        save_images = self.query.get("save_images", "false").lower() == "true"
        rq_id = (f"action=export&target=task&target_id={task.id}&user_id={user.id}"
                 f"&format={fmt.replace(' ', '_').replace('.', '~')}"
                 f"&subresource={'dataset' if save_images else 'annotations'}")
        running = self.fake.requests.get(rq_id)
        if running is not None and running.status in ("queued", "started"):
            self._send(409, {"rq_id": rq_id})
            return
        self.fake.requests[rq_id] = ExportRequest(rq_id, task.id, user, fmt, save_images)
        self._send(202, {"rq_id": rq_id})

    def _request_json(self, request: ExportRequest) -> dict:
        result_url = None
        if request.status == "finished":
            result_url = (f"{self.base}/api/tasks/{request.task_id}/dataset/download?"
                          f"{urlencode({'rq_id': request.id}, quote_via=quote)}")
        expiry = None
        if request.finished:  # RQ keeps a finished job's result for a day
            finished = datetime.fromisoformat(request.finished.replace("Z", "+00:00"))
            expiry = (finished + timedelta(days=1)).isoformat().replace("+00:00", "Z")
        return {
            "status": request.status, "message": request.message, "id": request.id,
            "operation": {"type": f"export:{'dataset' if request.save_images else 'annotations'}",
                          "target": "task", "project_id": self.fake.tasks[request.task_id].project_id,
                          "task_id": request.task_id, "job_id": None,
                          "format": request.format},
            "progress": 0.0, "created_date": request.created, "started_date": request.started,
            "finished_date": request.finished, "expiry_date": expiry,
            "owner": {"id": request.owner.id, "username": request.owner.username},
            "result_url": result_url, "result_id": None,
        }

    def handle_request_status(self, user: User, rq_id: str) -> None:
        request = self.fake.requests.get(rq_id)
        if request is None or request.owner.id != user.id:  # observed on 2.42: Django's page, not DRF's JSON
            raise HttpError(404, NOT_FOUND_PAGE, content_type="text/html")
        self.fake.advance(request)
        self._send(200, self._request_json(request))

    def handle_export_download(self, user: User, task_id: str) -> None:
        self.fake.task_for(user, int(task_id))
        rq_id = self.query.get("rq_id", "")
        if not RQ_ID.fullmatch(rq_id):
            raise HttpError(400, ["Unexpected request id format"])
        request = self.fake.requests.get(rq_id)
        if request is None or request.task_id != int(task_id) or request.owner.id != user.id:
            raise HttpError(404, NOT_FOUND_PAGE, content_type="text/html")
        if request.status != "finished" or request.file is None:  # observed on 2.42: an HTML page
            raise HttpError(400, BAD_REQUEST_PAGE, content_type="text/html")
        self._send_file(request.file, request.task_id, request.format)

    def _send_file(self, path: Path, task_id: int, fmt: str) -> None:
        data = path.read_bytes()
        stamp = datetime.now(timezone.utc).strftime("%Y_%m_%d_%H_%M_%S")
        name = f"task_{task_id}_dataset_{stamp}_{fmt.lower()}.zip"
        self._start_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Disposition", f'attachment; filename="{name}"')
        self.end_headers()
        if self.fake.truncate_downloads > 0:
            self.fake.truncate_downloads -= 1
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)

    # -- legacy export flow (up to 2.31; 410 from 2.32) --

    def handle_legacy_export(self, user: User, task_id: str) -> None:
        task = self.fake.task_for(user, int(task_id))
        self._legacy_flow(user, task, self.query.get("format"), subresource="dataset")

    def _legacy_flow(self, user: User, task: Task, fmt: Optional[str], *, subresource: str) -> None:
        """v2.14 ``_export_annotations``: 202 while running, 201 when ready, 200 with the file on
        ``action=download``; a failed export answers 500 with the error text once."""
        if self.fake.version_tuple >= (2, 32):
            raise HttpError(410, f"This endpoint is no longer supported. To initiate the export process, use "
                                 f"POST /api/tasks/id/{subresource}/export?save_images=True",
                            content_type="text/html")
        fmt = self._check_format(fmt)
        key = f"legacy&task={task.id}&user={user.id}&format={fmt}&subresource={subresource}"
        request = self.fake.requests.get(key)
        if self.query.get("action") == "download":
            if request is None or request.status != "finished" or request.file is None:
                raise HttpError(400, "Export has not finished", content_type="text/plain")
            self._send_file(request.file, task.id, fmt)
            return
        if request is None:
            self.fake.requests[key] = ExportRequest(key, task.id, user, fmt, subresource == "dataset")
            self._send(202)
            return
        self.fake.advance(request)
        if request.status == "failed":
            del self.fake.requests[key]
            raise HttpError(500, request.message, content_type="text/plain")
        self._send(201 if request.status == "finished" else 202)


# --- pytest fixture -------------------------------------------------------------------------------


@pytest.fixture
def fake_cvat(tmp_path: Path) -> Iterator[FakeCvat]:
    """A running CVAT 2.42 fake; configure it (users, tasks, faults) inside the test."""
    with FakeCvat(tmp_path / "fake-cvat") as fake:
        yield fake

