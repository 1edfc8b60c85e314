"""docker-compose.yml and .env.example as Compose sees them: the YAML, the .env file, and interpolation.

Interpolation follows the Compose specification: `$$` is a literal `$`; `${VAR}` and `$VAR`;
`${VAR:-default}` (unset or empty) and `${VAR-default}` (unset); `${VAR:?message}` and `${VAR?message}` fail;
`${VAR:+other}` and `${VAR+other}` substitute when set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(Exception):
    pass


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """KEY=VALUE lines; single quotes keep the value literal, double quotes are stripped."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def variables_used(text: str) -> set[str]:
    return {m.group("braced") or m.group("plain") for m in _VARIABLE.finditer(text) if not m.group("escaped")}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value
    return _VARIABLE.sub(lambda match: _substitute(match, env), value)


def _substitute(match: re.Match[str], env: dict[str, str]) -> str:
    if match.group("escaped"):
        return "$"
    name = match.group("braced") or match.group("plain")
    op, arg = match.group("op"), match.group("arg") or ""
    current = env.get(name)
    present = current is not None and (current != "" or not (op or "").startswith(":"))
    if op in (":-", "-"):
        return current if present else arg
    if op in (":?", "?"):
        if not present:
            raise InterpolationError(f"{name}: {arg}")
        return current
    if op in (":+", "+"):
        return arg if present else ""
    return current or ""
