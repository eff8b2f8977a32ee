"""A job setting's declaration (``Option``) and the parsers of its values.

A value comes from a flag (a string) or a spec file (any YAML value); each parser takes
either and raises :class:`SpecError` saying what it expected.  The job's generic settings
(jobs/spec.py) and each task's own (jobs/tasks/) are declared the same way, so the CLI, the
spec file and the manifest are built from one list.
"""
from __future__ import annotations

import argparse
import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


class SpecError(ValueError):
    """A setting is missing, unknown or has a bad value (the message names it)."""


@dataclass(frozen=True)
class Option:
    """One setting: ``--name-with-dashes`` on the command line, ``name`` in a spec file."""

    name: str
    help: str
    parse: Callable[[Any], Any]
    default: Any = None
    flag: Mapping[str, Any] = field(default_factory=dict)  # argparse extras: choices, metavar, action
    # Whether the value changes what the output files hold: then it is part of the job's
    # identity, and a rerun with another value recomputes instead of resuming.
    identity: bool = True

    @property
    def flag_name(self) -> str:
        return "--" + self.name.replace("_", "-")

    def argparse_kwargs(self) -> dict[str, Any]:
        kwargs = {"help": self.help, **self.flag}
        if "action" not in kwargs and "metavar" not in kwargs and "choices" not in kwargs:
            kwargs["metavar"] = "VALUE"
        return kwargs

    def value(self, raw: Any, origin: str) -> Any:
        try:
            return self.parse(raw)
        except SpecError as err:
            raise SpecError(f"{self.flag_name} ({origin}): {err}") from None


def csv(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise SpecError(f"expected a comma-separated string or a list of strings, got {value!r}")


def inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return csv(value)


def actors(value: Any) -> tuple[int, int]:
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        parts = [int(v) for v in items]
    except (TypeError, ValueError):
        raise SpecError(f"actors must be N or MIN,MAX (whole numbers), got {value!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not 1 <= parts[0] <= parts[1]:
        raise SpecError(f"actors must be N or MIN,MAX with 1 <= MIN <= MAX, got {value!r}")
    return parts[0], parts[1]


def json_dict(value: Any) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise SpecError(f"storage options must be a JSON object, got {value!r} ({err})") from None
    if not isinstance(value, dict):
        raise SpecError(f"storage options must be a JSON object (a mapping), got {value!r}")
    return value


def choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise SpecError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value
    return parse


def positive(kind: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise SpecError(f"expected a {kind.__name__}, got {value!r}") from None
        if number <= 0 or (kind is int and isinstance(value, float) and value != number):
            raise SpecError(f"expected a positive {kind.__name__}, got {value!r}")
        return number
    return parse


def whole(value: Any) -> int:
    """A whole number >= 0 (0 often meaning "off")."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        raise SpecError(f"expected a whole number >= 0, got {value!r}")
    return int(value)


def non_negative_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"expected a number, got {value!r}") from None
    if number < 0:
        raise SpecError(f"expected a number >= 0, got {value!r}")
    return number


def iso_date(value: Any) -> str:
    """A calendar date, YYYY-MM-DD (a YAML date too), returned in that form."""
    if isinstance(value, datetime.date):
        return value.isoformat()
    try:
        return datetime.date.fromisoformat(str(value).strip()).isoformat()
    except ValueError:
        raise SpecError(f"expected a date YYYY-MM-DD, got {value!r}") from None


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise SpecError(f"expected true or false, got {value!r}")


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"expected a non-empty string, got {value!r}")
    return value


# argparse extras for an on/off setting: --flag / --no-flag.
SWITCH = {"action": argparse.BooleanOptionalAction}


_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def byte_size(value: Any) -> int:
    """A positive number of bytes: ``268435456``, ``256MiB``, ``128 MB``, ``1.5GiB``."""
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgib")
    unit = text[len(number):]
    try:
        size = int(float(number) * _BYTE_UNITS[unit])
    except (KeyError, ValueError):
        raise SpecError(f"expected a size in bytes such as 268435456, 256MiB or 128MB, got {value!r}") from None
    if size <= 0:
        raise SpecError(f"expected a positive size, got {value!r}")
    return size
