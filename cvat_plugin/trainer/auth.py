"""The trainer's shared token: the one secret that the trainer function, the gateway and
``cvat-detr`` hold, so that nobody else on CVAT's network can use the trainer's job API.

The token travels as ``Authorization: Bearer <token>`` and is compared in constant time.
``deploy/deploy.sh`` generates it once and gives it to both sides; it never reaches a browser.
"""

from __future__ import annotations

import hmac
import os
from typing import Mapping, Optional

TOKEN_ENV = "DETR_TRAINER_TOKEN"
#: Shorter secrets are guessable; ``deploy.sh`` makes 64 hex digits.
MIN_TOKEN_LENGTH = 16
HOW_TO_SET = (f"set {TOKEN_ENV} to the trainer's token: deploy/deploy.sh generates it once and keeps it in "
              f"~/.config/cvat-detr/trainer-token (or run `openssl rand -hex 32` and give the same value to the "
              f"trainer, the gateway and cvat-detr)")


class TrainerTokenError(ValueError):
    """The token is missing or too weak; the message says how to set it."""


def token_from_env(env: Mapping[str, str] = os.environ, *, who: str) -> str:
    """The token in ``DETR_TRAINER_TOKEN``; ``who`` names the program that needs it, for the message."""
    token = (env.get(TOKEN_ENV) or "").strip()
    if not token:
        raise TrainerTokenError(f"{TOKEN_ENV} is not set, and {who} needs it to use the trainer's job API: "
                                f"{HOW_TO_SET}")
    if len(token) < MIN_TOKEN_LENGTH:
        raise TrainerTokenError(f"{TOKEN_ENV} is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH} "
                                f"random characters (`openssl rand -hex 32`) on the trainer, the gateway and "
                                f"cvat-detr")
    return token


def authorization(token: str) -> str:
    """The ``Authorization`` header value that carries the token."""
    return f"Bearer {token}"


def token_matches(token: str, header: Optional[str]) -> bool:
    """Whether an ``Authorization`` header carries ``token``, compared in constant time."""
    if not header:
        return False
    return hmac.compare_digest(authorization(token).encode("utf-8"), header.strip().encode("utf-8", "replace"))
