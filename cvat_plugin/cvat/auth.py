"""How the CVAT client proves who the user is: personal access tokens, legacy API keys,
user + password, and a browser session forwarded by the gateway.

Secrets never show in a repr; messages name where a credential came from, never its value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

import requests


class Credentials:
    """How requests prove who the user is. Subclasses never show their secret in a repr."""

    #: Where the user set it, for messages ("--access-token / CVAT_ACCESS_TOKEN").
    source: str = ""

    def apply(self, session: requests.Session, host: str) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, repr=False)
class _HeaderToken(Credentials):
    token: str
    scheme = ""
    what = ""

    def apply(self, session: requests.Session, host: str) -> None:
        session.headers["Authorization"] = f"{self.scheme} {self.token}"

    def describe(self) -> str:
        return self.what

    def __repr__(self) -> str:
        return f"{type(self).__name__}(token=***)"


@dataclass(frozen=True, repr=False)
class AccessToken(_HeaderToken):
    """A personal access token, sent as ``Authorization: Bearer`` (CVAT newer than 2.42)."""

    source: str = "--access-token / CVAT_ACCESS_TOKEN"
    scheme = "Bearer"
    what = "the personal access token"


@dataclass(frozen=True, repr=False)
class LegacyToken(_HeaderToken):
    """An API key from ``POST /api/auth/login``, sent as ``Authorization: Token`` (deprecated in 2.41)."""

    source: str = "--token / CVAT_TOKEN"
    scheme = "Token"
    what = "the API token"


@dataclass(frozen=True, repr=False)
class PasswordCredentials(Credentials):
    """User name and password, sent as HTTP Basic auth on every call (no session to expire)."""

    username: str
    password: str
    source: str = "--username/--password / CVAT_USERNAME and CVAT_PASSWORD"

    def apply(self, session: requests.Session, host: str) -> None:
        session.auth = (self.username, self.password)

    def describe(self) -> str:
        return f"the password of user {self.username!r}"

    def __repr__(self) -> str:
        return f"PasswordCredentials(username={self.username!r}, password=***)"


@dataclass(frozen=True, repr=False)
class BrowserSession(Credentials):
    """A browser's CVAT session forwarded by the gateway: ``sessionid`` and ``csrftoken``
    cookies, plus the ``X-CSRFToken`` header CVAT requires on unsafe methods."""

    sessionid: str
    csrftoken: str
    source: str = "the browser session"

    def apply(self, session: requests.Session, host: str) -> None:
        # Scoped to the CVAT host, so a redirect elsewhere never carries them.
        session.cookies.set("sessionid", self.sessionid, domain=host, path="/")
        session.cookies.set("csrftoken", self.csrftoken, domain=host, path="/")
        session.headers["X-CSRFToken"] = self.csrftoken

    def describe(self) -> str:
        return "the browser session"

    def __repr__(self) -> str:
        return "BrowserSession(sessionid=***, csrftoken=***)"


@dataclass(frozen=True, repr=False)
class ForwardedAuthorization(Credentials):
    """A caller's ``Authorization`` header (``Token``, ``Bearer`` or ``Basic``), forwarded verbatim
    by the gateway so that CVAT, not the gateway, decides who the caller is."""

    header: str
    source: str = "the Authorization header of the request"

    def apply(self, session: requests.Session, host: str) -> None:
        session.headers["Authorization"] = self.header

    def describe(self) -> str:
        scheme = self.header.partition(" ")[0]
        return f"the {scheme} credentials of the Authorization header" if scheme else "the Authorization header"

    def __repr__(self) -> str:
        return "ForwardedAuthorization(header=***)"


def credentials_from(
    *,
    access_token: Optional[str] = None,
    token: Optional[str] = None,
    username: Optional[str] = None,
    password: Optional[str] = None,
    env: Mapping[str, str] = os.environ,
) -> Optional[Credentials]:
    """Pick credentials from explicit values first, then the environment
    (``CVAT_ACCESS_TOKEN``, ``CVAT_TOKEN``, ``CVAT_USERNAME``/``CVAT_PASSWORD``); None if none is set."""
    if access_token:
        return AccessToken(access_token)
    if token:
        return LegacyToken(token)
    if username:
        password = password or env.get("CVAT_PASSWORD")
        if not password:
            raise ValueError(f"a password is needed for user {username!r}: set CVAT_PASSWORD")
        return PasswordCredentials(username, password)
    if env.get("CVAT_ACCESS_TOKEN"):
        return AccessToken(env["CVAT_ACCESS_TOKEN"])
    if env.get("CVAT_TOKEN"):
        return LegacyToken(env["CVAT_TOKEN"])
    if env.get("CVAT_USERNAME"):
        return credentials_from(username=env["CVAT_USERNAME"], password=password, env=env)
    return None


def redact_url(url: str) -> str:
    """``url`` without a user name and password, fit for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
