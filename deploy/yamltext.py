"""YAML text with comments, for the deployment files an admin reads: PyYAML parses and quotes,
but its dumper drops comments, so this writes block YAML itself and lets PyYAML quote each scalar.

A mapping key may be a :class:`Key` and a list item an :class:`Item`: both carry comment lines
written above them (and a blank line before, with ``gap``). Multi-line strings become literal
blocks. ``yaml.safe_load(dump(data))`` equals ``plain(data)``.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import yaml

INDENT = "  "


class Key(str):
    """A mapping key with comment lines above it (equal and hashed as the plain string)."""

    comment: tuple[str, ...]
    gap: bool

    def __new__(cls, name: str, *comment: str, gap: bool = False) -> "Key":
        key = super().__new__(cls, name)
        key.comment, key.gap = comment, gap
        return key


class Item:
    """A list item with comment lines above it."""

    def __init__(self, value: Any, *comment: str) -> None:
        self.value, self.comment = value, comment


def plain(data: Any) -> Any:
    """``data`` without comments: what a YAML parser reads back."""
    if isinstance(data, Item):
        return plain(data.value)
    if isinstance(data, dict):
        return {str(key): plain(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [plain(value) for value in data]
    return data


def dump(data: dict, header: Sequence[str] = ()) -> str:
    """The document ``data`` (a mapping) as block YAML, after the ``header`` comment lines."""
    lines = [_comment(line) for line in header]
    lines.extend(_mapping(data, 0))
    return "\n".join(lines) + "\n"


def _comment(text: str, indent: str = "") -> str:
    return f"{indent}# {text}".rstrip() if text else f"{indent}#"


def _scalar(value: Any) -> str:
    if value is None or isinstance(value, (bool, int, float, str)):
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True)
        return text.removesuffix("\n").removesuffix("\n...")
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a YAML scalar")


def _inline(value: Any) -> str | None:
    """The one-line form of ``value`` after ``key:`` or ``-``, or None for a nested block."""
    if isinstance(value, dict):
        return "{}" if not value else None
    if isinstance(value, (list, tuple)):
        return "[]" if not value else None
    if _as_block(value):
        return None
    return _scalar(value)


def _as_block(value: Any) -> bool:
    """Multi-line strings are literal blocks, unless their first line is indented (that needs an
    indentation indicator) or they hold carriage returns: those stay quoted."""
    return isinstance(value, str) and "\n" in value and not value[:1].isspace() and "\r" not in value


def _block_string(value: str, depth: int) -> Iterator[str]:
    # Chomping: "|-" drops the final newline, "|" keeps one, "|+" keeps them all.
    body = value.removesuffix("\n")
    yield "|-" if body == value else "|+" if body.endswith("\n") else "|"
    for line in body.split("\n"):
        yield f"{INDENT * depth}{line}" if line else ""


def _value_lines(head: str, value: Any, depth: int) -> Iterator[str]:
    """``head`` (``key:`` or ``-``) followed by ``value`` nested at ``depth``."""
    inline = _inline(value)
    if inline is not None:
        yield f"{head} {inline}"
    elif isinstance(value, str):
        indicator, *body = _block_string(value, depth)
        yield f"{head} {indicator}"
        yield from body
    else:
        yield head
        yield from (_mapping(value, depth) if isinstance(value, dict) else _sequence(value, depth))


def _mapping(data: dict, depth: int) -> Iterator[str]:
    indent = INDENT * depth
    for key, value in data.items():
        if isinstance(key, Key):
            if key.gap:
                yield ""
            yield from (_comment(line, indent) for line in key.comment)
        yield from _value_lines(f"{indent}{_scalar(str(key))}:", value, depth + 1)


def _sequence(items: Sequence[Any], depth: int) -> Iterator[str]:
    indent = INDENT * depth
    for item in items:
        if isinstance(item, Item):
            yield from (_comment(line, indent) for line in item.comment)
            item = item.value
        if isinstance(item, dict) and item:
            # The first key shares the dash's line; the others (and comments) line up under it.
            dashed = False
            for line in _mapping(item, depth + 1):
                if not dashed and line.strip() and not line.lstrip().startswith("#"):
                    line, dashed = f"{indent}- {line.lstrip()}", True
                yield line
        else:
            yield from _value_lines(f"{indent}-", item, depth + 1)
