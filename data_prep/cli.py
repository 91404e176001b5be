"""``key=value`` arguments for the small data_prep commands (verify, fake, demo), in the style of the Hydra
overrides of ``python -m data_prep``, with one-line errors for unknown keys and bad values."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

EXIT_USER_ERROR = 2


def fail(program: str, message: str) -> NoReturn:
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"{text!r} is not true or false")


def parse_overrides(
    program: str, argv: Sequence[str], fields: dict[str, tuple[Callable[[str], Any], Any]]
) -> dict[str, Any]:
    """``fields``: name -> (parser, default); a default of ``...`` marks the field as required."""
    values = {name: default for name, (_, default) in fields.items()}
    usage = " ".join(f"{name}=..." for name in fields)
    for arg in argv:
        name, sep, text = arg.partition("=")
        if not sep or name not in fields:
            fail(program, f"unknown argument {arg!r}; usage: {program} {usage}")
        try:
            values[name] = fields[name][0](text)
        except ValueError as exc:
            fail(program, f"{name}={text}: {exc}")
    missing = [name for name, value in values.items() if value is ...]
    if missing:
        fail(program, f"missing {', '.join(f'{m}=' for m in missing)}; usage: {program} {usage}")
    return values
