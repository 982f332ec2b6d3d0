"""Defaults from configuration files, and the options a lab locks.

Lowest to highest: the option's own default, `/etc/qsandbox/config.toml` (the lab's),
`$XDG_CONFIG_HOME/qsandbox/config.toml` (the user's; `~/.config` without the variable), a
`QSANDBOX_<OPTION>` environment variable, the command line. A file holds options by their long
name (`memory = "4g"`, `token-mode = "short-lived"`, `allow-host = ["a.example"]`); the lab's may
also hold a `[locked]` table: those values are in force for everyone, and a command line or
variable that gives another is refused (`strict = true`, `network = "allowlist"`).

A key is never configuration: the key-source options (`--token-*`) are refused in a file and have
no variable, so the sources in credentials.py stay the only ones.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...common.errors import UsageError
from ...common.text import shown

SYSTEM_CONFIG = Path("/etc/qsandbox/config.toml")
ENV_PREFIX = "QSANDBOX_"
LOCKED_TABLE = "locked"
KEY_SOURCES = frozenset({"token-stdin", "token-file", "token-env", "token-command", "token"})


def user_config(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "qsandbox" / "config.toml"


def envvar(long_name: str) -> str:
    """The variable for an option: --token-mode -> QSANDBOX_TOKEN_MODE."""
    return ENV_PREFIX + long_name.replace("-", "_").upper()


@dataclass(frozen=True)
class Setting:
    value: Any
    origin: str  # the file it came from


@dataclass
class Config:
    """What the files say: option long name -> value and where it came from; the lab's locks."""

    values: dict[str, Setting] = field(default_factory=dict)
    locked: dict[str, Setting] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # the files read, lowest first


def _read(path: Path) -> dict[str, Any] | None:
    import tomllib  # only where a file is there to read: a run with none does not pay for it

    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise UsageError(f"cannot read the configuration {shown(str(path))}: permission denied") from None
    except OSError as e:
        raise UsageError(f"cannot read the configuration {shown(str(path))}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"configuration {shown(str(path))} is not valid TOML: {e}") from None


def _entries(table: dict[str, Any], path: Path, known: Iterable[str], where: str) -> dict[str, Setting]:
    known = sorted(known)
    out = {}
    for raw, value in table.items():
        key = raw.replace("_", "-")
        if key in KEY_SOURCES:
            raise UsageError(
                f"configuration {shown(str(path))}: {shown(raw)}: the API key and its source are never "
                "configuration: choose a source on the command line (--token-stdin, --token-file, ...)"
            )
        if isinstance(value, dict):
            raise UsageError(f"configuration {shown(str(path))}: [{shown(raw)}] is not a table qsandbox knows")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"configuration {shown(str(path))}{where}: unknown option {shown(raw)}{hint}")
        out[key] = Setting(value, str(path))
    return out


def load(known: Iterable[str], system: Path | None = None, user: Path | None = None) -> Config:
    """The files' settings for the options named `known` (long names); locks from the lab's file."""
    known = set(known)
    config = Config()
    for path, lab in ((system or SYSTEM_CONFIG, True), (user or user_config(), False)):
        data = _read(path)
        if data is None:
            continue
        config.files.append(path)
        locked = data.pop(LOCKED_TABLE, None)
        config.values.update(_entries(data, path, known, ""))
        if locked is None:
            continue
        if not lab:
            raise UsageError(
                f"configuration {shown(str(path))}: [locked] belongs in the lab's {SYSTEM_CONFIG}; "
                "your own file sets defaults only"
            )
        if not isinstance(locked, dict):
            raise UsageError(f"configuration {shown(str(path))}: locked must be a table, [locked]")
        config.locked.update(_entries(locked, path, known, " [locked]"))
    config.values.update(config.locked)  # in force whatever the user's file says
    return config
