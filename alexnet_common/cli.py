"""``key=value`` arguments for the project's small commands (data_prep's verify, fake and demo; pipeline's
evaluate and compare), in the style of the Hydra commands (``python -m data_prep``, ``python -m
pipeline.train``), so that every command of the project reads the same way. One-line errors for unknown keys
and bad values; ``--help`` lists the keys."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

EXIT_USER_ERROR = 2
REQUIRED = ...

# name -> (parser, default, help); a default of REQUIRED marks the key as required.
Fields = dict[str, tuple[Callable[[str], Any], Any, str]]


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


def optional(parser: Callable[[str], Any]) -> Callable[[str], Any]:
    """``key=null`` (or ``none``) gives None, anything else goes to ``parser``."""
    return lambda text: None if text.lower() in ("null", "none", "") else parser(text)


def _usage(program: str, fields: Fields) -> str:
    lines = [f"usage: {program} " + " ".join(f"{name}=..." for name in fields)]
    for name, (_, default, help_text) in fields.items():
        shown = "required" if default is REQUIRED else f"default: {default}"
        lines.append(f"  {name:<16} {help_text} ({shown})")
    return "\n".join(lines)


def parse_overrides(program: str, argv: Sequence[str], fields: Fields) -> dict[str, Any]:
    values = {name: default for name, (_, default, _) in fields.items()}
    if any(arg in ("-h", "--help") for arg in argv):
        print(_usage(program, fields))
        sys.exit(0)
    for arg in argv:
        name, sep, text = arg.partition("=")
        if not sep or name not in fields:
            fail(program, f"unknown argument {arg!r}\n{_usage(program, fields)}")
        try:
            values[name] = fields[name][0](text)
        except ValueError as exc:
            fail(program, f"{name}={text}: {exc}")
    missing = [name for name, value in values.items() if value is REQUIRED]
    if missing:
        fail(program, f"missing {', '.join(f'{m}=' for m in missing)}\n{_usage(program, fields)}")
    return values
