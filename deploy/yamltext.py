"""YAML for the deployment files, read and written with ruamel.yaml, which keeps the comments an
admin reads.

The builders mark comments in plain data: a mapping key may be a :class:`Key` and a list item an
:class:`Item`, both carrying comment lines written above them (and a blank line before, with
``gap``). :func:`dump` turns that data into ruamel's commented types, placing each comment at the
column of what it describes (ruamel's comment API asks for it), and multi-line strings into literal
blocks. ``yaml.safe_load(dump(data))`` equals ``plain(data)``.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

try:
    from ruamel.yaml import YAML, YAMLError
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.nodes import ScalarNode
    from ruamel.yaml.representer import SafeRepresenter
    from ruamel.yaml.resolver import VersionedResolver
    from ruamel.yaml.scalarstring import LiteralScalarString
except ModuleNotFoundError:
    raise SystemExit("deploy/render.py needs the Python package ruamel.yaml: pip install 'ruamel.yaml>=0.19'") from None

__all__ = ["Key", "Item", "YAMLError", "plain", "dump", "dump_all", "read"]

#: Nested mappings and list dashes are indented by this much under their key; a list item's content
#: starts this much after its dash.
INDENT = 2
_STR = "tag:yaml.org,2002:str"
#: YAML 1.1's reading of plain scalars, as Kubernetes, Nuclio and PyYAML read them.
_YAML_1_1 = VersionedResolver(version=(1, 1))


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


def read(text: str) -> Any:
    """The YAML document ``text`` as plain Python data (YAML 1.2: only true and false are booleans)."""
    return YAML(typ="safe", pure=True).load(text)


def dump(data: dict, header: Sequence[str] = ()) -> str:
    """The document ``data`` (a mapping) as block YAML, after the ``header`` comment lines."""
    return dump_all([data], header)


def dump_all(documents: Sequence[dict], header: Sequence[str] = ()) -> str:
    """The ``documents`` (mappings) as a YAML stream, the ``header`` comment lines before the first."""
    commented = [_commented(document, 0) for document in documents]
    if header and commented:
        # An empty header line stays a bare "#", so the header reads as one comment.
        commented[0].yaml_set_start_comment("\n".join(line or "#" for line in header))
    stream = io.StringIO()
    _writer().dump_all(commented, stream)
    return stream.getvalue()


def _writer() -> YAML:
    yaml = YAML()
    yaml.indent(mapping=INDENT, sequence=2 * INDENT, offset=INDENT)
    yaml.width = 1 << 30  # long lines (shell commands, URLs) stay on one line
    yaml.representer.add_representer(str, _represent_str)
    yaml.representer.add_representer(type(None), SafeRepresenter.represent_none)
    return yaml


def _represent_str(representer: Any, value: str) -> ScalarNode:
    """Quotes too what YAML 1.1 reads as something else ("yes", "on", "0777", "12:30"); ruamel
    writes YAML 1.2, where those are plain strings, but Kubernetes, Nuclio and PyYAML read 1.1."""
    style = "'" if _YAML_1_1.resolve(ScalarNode, value, (True, False)) != _STR else None
    return representer.represent_scalar(_STR, value, style=style)


def _commented(value: Any, column: int) -> Any:
    """``value`` as ruamel's types, with its comments at ``column``, where its keys or dashes start."""
    if isinstance(value, dict):
        mapping = CommentedMap()
        for key, item in value.items():
            mapping[str(key)] = _commented(item, column + INDENT)
            if isinstance(key, Key):
                _comment_before(mapping, str(key), ["", *key.comment] if key.gap else key.comment, column)
        return mapping
    if isinstance(value, (list, tuple)):
        sequence = CommentedSeq()
        for index, item in enumerate(value):
            sequence.append(_commented(item.value if isinstance(item, Item) else item, column + INDENT))
            if isinstance(item, Item):
                _comment_before(sequence, index, item.comment, column)
        return sequence
    if isinstance(value, str) and _literal(value):
        return LiteralScalarString(value)
    return value


def _comment_before(container: CommentedMap | CommentedSeq, key: Any, lines: Sequence[str], column: int) -> None:
    """Comment ``lines`` above ``key`` of ``container`` (an empty line is a blank line)."""
    if lines:
        container.yaml_set_comment_before_after_key(key, before="\n".join(lines), indent=column)


def _literal(value: str) -> bool:
    """Multi-line strings are literal blocks, unless they hold a character a block cannot keep
    (ruamel writes any string marked literal as one, and a carriage return would become a newline)."""
    return "\n" in value and value.replace("\n", "").isprintable()
