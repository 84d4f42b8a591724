"""Who is calling: the CVAT credentials a request carries, forwarded so that CVAT decides.

A browser sends its CVAT session (``sessionid`` and ``csrftoken`` cookies, plus the
``X-CSRFToken`` header on POST); API clients send ``Authorization``. The gateway keeps
neither beyond the request and the export it starts, and never logs them. Because a
cookie-carrying POST could come from another site, unsafe requests made with the session
must carry the CSRF token, checked the way Django checks it.
"""

from __future__ import annotations

import hmac
import string
from typing import Mapping, Optional

from cvat_plugin.cvat.auth import BrowserSession, Credentials, ForwardedAuthorization
from cvat_plugin.cvat.client import CvatClient, CvatError
from cvat_plugin.gateway.errors import GatewayError, from_cvat

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: Django's CSRF token alphabet and secret length (``django/middleware/csrf.py``); a 64-character
#: token is a masked secret: its first half is the mask.
_CSRF_CHARS = string.ascii_letters + string.digits
_CSRF_SECRET_LENGTH = 32


def caller_credentials(headers: Mapping[str, str], cookies: Mapping[str, str]) -> Optional[Credentials]:
    """The caller's ``Authorization`` header if it sent one, else its CVAT session cookies, else None."""
    authorization = (headers.get("authorization") or "").strip()
    if authorization:
        return ForwardedAuthorization(authorization)
    sessionid = cookies.get("sessionid")
    if sessionid:
        return BrowserSession(sessionid, cookies.get("csrftoken", ""))
    return None


def require_credentials(credentials: Optional[Credentials]) -> Credentials:
    if credentials is None:
        raise GatewayError(401, "no CVAT session came with the request: log in to CVAT, then try again")
    return credentials


def _csrf_secret(token: str) -> Optional[str]:
    """The secret behind a Django CSRF token (32 characters, or 64 when masked); None if malformed."""
    if any(char not in _CSRF_CHARS for char in token):
        return None
    if len(token) == _CSRF_SECRET_LENGTH:
        return token
    if len(token) == 2 * _CSRF_SECRET_LENGTH:
        mask, cipher = token[:_CSRF_SECRET_LENGTH], token[_CSRF_SECRET_LENGTH:]
        return "".join(_CSRF_CHARS[_CSRF_CHARS.index(c) - _CSRF_CHARS.index(m)] for c, m in zip(cipher, mask))
    return None


def check_csrf(method: str, headers: Mapping[str, str], credentials: Optional[Credentials]) -> None:
    """An unsafe request made with a browser session must echo its ``csrftoken`` cookie in ``X-CSRFToken``."""
    if method in SAFE_METHODS or not isinstance(credentials, BrowserSession):
        return
    header = _csrf_secret(headers.get("x-csrftoken", ""))
    cookie = _csrf_secret(credentials.csrftoken)
    if header is None or cookie is None or not hmac.compare_digest(header, cookie):
        raise GatewayError(403, "CSRF check failed: the request must carry the csrftoken cookie in the "
                                "X-CSRFToken header; reload the CVAT page and try again")


def authorize_project(client: CvatClient, project_id: int) -> dict:
    """``GET /api/projects/{id}`` as the caller: the project if CVAT lets the caller see it, else CVAT's refusal."""
    try:
        return client.get_project(project_id)
    except CvatError as e:
        raise from_cvat(e, action=f"see project {project_id}", credentials=client.credentials) from e


#: Organization roles that may change any task of the organization, as CVAT's own rules grant it.
CHANGING_ORG_ROLES = ("maintainer", "owner")


def _user_id(field: object) -> object:
    return field.get("id") if isinstance(field, dict) else None


def require_change(client: CvatClient, resource: dict, *, what: str, project: Optional[dict] = None) -> None:
    """Refuse (403) a caller who may see ``resource`` (a task or project as CVAT answered it) but not
    change it. Starting or cancelling a training and publishing a model change the task; CVAT lets do
    that the task's (or project's) owner or assignee, an organization's maintainer or owner, and an
    admin. Derived from what CVAT tells the caller about themselves, never from a list of ours."""
    try:
        me = client.get_self()
        if me.get("is_superuser") or "admin" in (me.get("groups") or []):
            return
        owners = {_user_id(resource.get("owner")), _user_id(resource.get("assignee"))}
        if project is not None:
            owners |= {_user_id(project.get("owner")), _user_id(project.get("assignee"))}
        if me.get("id") is not None and me.get("id") in owners:
            return
        organization = resource.get("organization")
        if isinstance(organization, int) and \
                client.get_membership_role(organization, str(me.get("username"))) in CHANGING_ORG_ROLES:
            return
    except CvatError as e:
        raise from_cvat(e, action=f"check who may change {what}", credentials=client.credentials) from e
    raise GatewayError(403, f"CVAT lets you see {what} but not change it: training it, cancelling its training "
                            f"and publishing its models need its owner or assignee (or the project's), an "
                            f"organization maintainer or owner, or an admin; ask one of them")


def authorize_task(client: CvatClient, task_id: int) -> dict:
    """``GET /api/tasks/{id}`` as the caller: the task if CVAT lets the caller see it, else CVAT's refusal."""
    try:
        return client.get_task(task_id)
    except CvatError as e:
        raise from_cvat(e, action=f"see task {task_id}", credentials=client.credentials) from e
