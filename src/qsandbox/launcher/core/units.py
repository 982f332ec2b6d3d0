"""Sizes and durations as the docker CLI takes them: one parser each, and the click types on them.

Sizes: a number with an optional unit, `b`, `k`, `m` or `g` (powers of 1024), upper or lower case,
an optional trailing `b` (`2GB`, `1.5g`, `512m`, `100`), as `docker run --memory` reads them
(docker.utils.parse_bytes, the SDK's own parser). Durations: plain seconds (`90`, `2.5`) or Go's
form as `docker run --stop-timeout` and healthchecks take it (`10m`, `1h30m`, `1m30.5s`, `500ms`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import click
from docker.errors import DockerException
from docker.utils import parse_bytes

from ...common.errors import UsageError

SIZE_FORM = "a number with an optional unit: 512m, 2g, 1.5g, 2GB, 64k, or bytes"
DURATION_FORM = "seconds (90, 2.5) or with units: 500ms, 10m, 1h30m"

_SIZE = re.compile(r"^\d+(\.\d+)?([bkmg]b?)?$", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size(text: str) -> int:
    """'2GB', '1.5g', '512m', '100' -> bytes (a positive whole number). UsageError with the form."""
    value = text.strip()
    if not _SIZE.match(value):
        raise UsageError(f"bad size {text!r}: use {SIZE_FORM}")
    # parse_bytes wants one unit letter (it reads 'gb' only in lower case, and not 'GB' or 'mB')
    unit = value.rstrip("bB") if len(value) > 1 and value[-2:-1].isalpha() else value
    try:
        size = int(parse_bytes(unit.lower()))
    except DockerException:
        raise UsageError(f"bad size {text!r}: use {SIZE_FORM}") from None
    if size <= 0:
        raise UsageError(f"bad size {text!r}: it must be more than 0 bytes")
    return size


def parse_duration(text: str) -> float:
    """'90', '2.5', '10m', '1h30m', '500ms' -> seconds (more than 0). UsageError with the form."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = list(_DURATION_PART.finditer(value))
        if not value or "".join(m.group(0) for m in parts) != value:
            raise UsageError(f"bad duration {text!r}: use {DURATION_FORM}") from None
        units = [m.group(2) for m in parts]
        if len(set(units)) != len(units):
            raise UsageError(f"bad duration {text!r}: each unit once (1h30m, not 1h1h)") from None
        seconds = sum(float(m.group(1)) * _DURATION_UNITS[m.group(2)] for m in parts)
    if not seconds > 0 or seconds == float("inf"):  # also NaN
        raise UsageError(f"bad duration {text!r}: it must be more than 0 seconds")
    return seconds


if TYPE_CHECKING:  # generic in click 8.5's types; subscripting it at run time fails on older click
    _ParamType = click.ParamType[Any, Any]
else:
    _ParamType = click.ParamType


class _Parsed(_ParamType):
    """A click type on one of the parsers above: a bad value is click's own usage error, named by
    its option, at the moment click reads it (so in the order the user gave the options)."""

    metavar_text = ""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value  # a default already parsed, or a config value of the right kind
        try:
            return self.parse(value)
        except UsageError as e:
            self.fail(str(e).removeprefix(f"bad {self.name} {value!r}: "), param, ctx)

    def parse(self, value: str) -> Any:
        raise NotImplementedError

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self.metavar_text


class Size(_Parsed):
    name = "size"
    metavar_text = "SIZE"

    def parse(self, value: str) -> int:
        return parse_size(value)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a config file's `memory = 1073741824`: bytes
        return super().convert(value, param, ctx)


class Duration(_Parsed):
    name = "duration"
    metavar_text = "DURATION"

    def parse(self, value: str) -> float:
        return parse_duration(value)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # a config file's `timeout = 90`: seconds
        return super().convert(value, param, ctx)


SIZE = Size()
DURATION = Duration()
