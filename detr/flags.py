"""Command-line flags for options (``detr.config.Option``): ``detr train`` and ``cvat-detr train`` build
theirs here, so a flag shows the option's range, choices and default, and refuses a wrong value with the
message the same value gets as JSON (exit 2, before any work)."""

from __future__ import annotations

import argparse
from typing import Any, Callable

from .config import Option, OptionError


def add_option_flag(group: Any, option: Option, *, default: Any = None, unset: str = "") -> None:
    """``--<name>`` for ``option``. Left out, it is ``default`` (None, or ``argparse.SUPPRESS`` to leave it
    out of the namespace; ``unset`` says in the help what happens then, else the option's default shows)."""
    flag = "--" + option.name.replace("_", "-")
    shown = unset or (option.default if default in (None, argparse.SUPPRESS) else default)
    if option.kind == "boolean":
        group.add_argument(flag, dest=option.name, action=argparse.BooleanOptionalAction, default=default,
                           help=_escape(f"{option.help} (default: {shown})"))
        return
    metavar = "{" + ",".join(option.choices) + "}" if option.choices else option.name.upper()
    group.add_argument(flag, dest=option.name, type=_option_value(option), default=default, metavar=metavar,
                       help=_escape(f"{option.help} ({option.rule}; default: {shown})"))


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse formats help with %


def _option_value(option: Option) -> Callable[[str], Any]:
    """argparse's ``type``: the text read as JSON reads a number (5 an int, 5.0 or 1e-4 a float, inf and
    nan as floats), then checked by the option, so that a value gets the message it gets as JSON."""
    def parse(text: str) -> Any:
        value: Any = text
        if option.kind in ("integer", "number"):
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    continue
        try:
            return option.parse(value)
        except OptionError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = option.name  # argparse names the type in some messages
    return parse
