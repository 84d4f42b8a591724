"""Wire format shared by the Nuclio functions: JSON bodies in, JSON responses out.

Nuclio decodes a body only when its content type is exactly ``application/json``, and a
handler that raises always becomes a 500 with a traceback. So handlers parse the body
themselves when it arrives as bytes, raise :class:`RequestError` for anything the caller
got wrong, and turn it into a 4xx ``{"error": ...}`` response at one boundary.
"""

from __future__ import annotations

import json
from typing import Any


class RequestError(Exception):
    """The caller sent something we cannot serve; ``status`` is the 4xx to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(context: Any, body: Any, status: int = 200) -> Any:
    """A ``context.Response`` carrying ``body`` as JSON.

    Never return a bare list from a handler: Nuclio treats it as a batch and the
    client receives only its first element.
    """
    return context.Response(
        body=json.dumps(body), headers={}, content_type="application/json", status_code=status
    )


def error_response(context: Any, error: RequestError) -> Any:
    return json_response(context, {"error": error.message}, error.status)


def json_body(event: Any) -> Any:
    """The request body as a JSON value, whatever content type it came with.

    An empty body gives None.
    """
    body = event.body
    if isinstance(body, (dict, list)):
        return body
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError("the request body is not UTF-8 text; send a JSON object") from e
    if not isinstance(body, str):
        raise RequestError(f"unexpected request body of type {type(body).__name__}; send a JSON object")
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise RequestError(f"the request body is not valid JSON ({e}); send a JSON object") from e
    except RecursionError:  # e.g. '[' x 5000: the parser's stack, not ours, gives up
        raise RequestError("the request body is nested too deeply; send a flat JSON object") from None


def json_object(event: Any, *, example: str) -> dict[str, Any]:
    """The request body, which must be a JSON object; ``example`` shows the caller its shape."""
    body = json_body(event)
    if not isinstance(body, dict):
        got = "an empty body" if body is None else f"a JSON {json_type(body)}"
        raise RequestError(f"expected a JSON object such as {example}, got {got}")
    return body


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__
