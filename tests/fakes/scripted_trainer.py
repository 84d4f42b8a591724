"""A trainer function stand-in that answers from a script, for client-side tests."""

from __future__ import annotations

import json
from collections import defaultdict, deque


class ScriptedTrainer:
    """Answers each (method, path) with the next scripted (status, body); records request bodies and headers."""

    def __init__(self):
        self.script: dict[tuple[str, str], deque] = defaultdict(deque)
        self.bodies: list[tuple[str, str, object, dict]] = []
        self.headers: list[dict[str, str]] = []

    def on(self, method: str, path: str, *replies: tuple[int, object]) -> None:
        self.script[(method, path)].extend(replies)

    def __call__(self, context, event):
        self.bodies.append((event.method, event.path, event.body, dict(event.fields)))
        self.headers.append(dict(event.headers))
        replies = self.script[(event.method, event.path)]
        status, body = replies.popleft() if len(replies) > 1 else replies[0]
        if isinstance(body, str):
            return context.Response(body=body, content_type="text/plain", status_code=status)
        return context.Response(body=json.dumps(body), content_type="application/json", status_code=status)
