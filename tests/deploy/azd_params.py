"""main.parameters.json read the way azd >= 1.23.4 reads it, so that the tests fail where `azd up` would.

From azd's `BicepProvider.loadParameters` and `armParameterFileValue`
(cli/azd/pkg/infra/provisioning/bicep/bicep_provider.go, Azure/azure-dev at ae35809f, 2026-08-21):

1. The raw file is unmarshalled as JSON before any substitution (since 1.15): an unquoted `${VAR=[]}` is a
   syntax error there ("error unmarshalling Bicep template parameters"), whatever the environment holds.
2. Each parameter is then substituted on its own with drone/envsubst v1.0.3, whose `${VAR=default}` (like
   `:=`, `:-` and `-`) yields the default when the variable's value is empty, unset or set to "" alike.
3. An array or object parameter whose value is a string (`"${VAR=[]}"`) has only that string substituted
   and the result parsed as JSON (azd 1.23.4, PR #6694; before it the string "[]" reached ARM as a string).
   Every other parameter has its whole `{"value": …}` entry substituted as JSON text and re-parsed.
4. A parameter that comes out empty while one of its variables is unset is left out, so the template's
   default applies; a string equal to "" when the template default is also "" is left out too.
5. Strings given to bool and int parameters are converted (`"false"` -> false, `"2"` -> 2); a string that
   does not convert is left out (the template default applies).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# ${NAME} or ${NAME<op>default} with the default operators drone/envsubst accepts; nothing in our file
# uses the others (case changes, substrings), and `unsupported` rejects them.
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-=])([^}]*))?\}")
_ANY_REFERENCE = re.compile(r"\$\{[^}]*\}")
# Go's strconv.ParseBool.
_BOOL_WORDS = {
    **dict.fromkeys(["1", "t", "T", "TRUE", "true", "True"], True),
    **dict.fromkeys(["0", "f", "F", "FALSE", "false", "False"], False),
}


class ParametersFileError(ValueError):
    """What azd would stop on, with its message."""


@dataclass(frozen=True)
class Substituted:
    text: str
    variables: tuple[str, ...]
    has_unset: bool


def envsubst(text: str, env: dict[str, str]) -> Substituted:
    """drone/envsubst's Eval with azd's lookup: unset variables read as ""; a default replaces any empty value."""
    unsupported = [m.group(0) for m in _ANY_REFERENCE.finditer(text) if not _REFERENCE.fullmatch(m.group(0))]
    if unsupported:
        raise ParametersFileError(f"substitution syntax this emulation does not model: {unsupported}")
    names: list[str] = []
    has_unset = False

    def replace(match: re.Match[str]) -> str:
        nonlocal has_unset
        name, operator, default = match.group(1), match.group(2), match.group(3) or ""
        names.append(name)
        if name not in env:
            has_unset = True
        value = env.get(name, "")
        return default if operator and not value else value

    return Substituted(_REFERENCE.sub(replace, text), tuple(names), has_unset)


def load(text: str, types: dict[str, str], env: dict[str, str]) -> dict[str, Any]:
    """Parameter name -> the value azd passes to ARM; a parameter missing from the result gets its default.

    `types` is each template parameter's Bicep type (string, int, bool, array, object)."""
    try:
        parameters = json.loads(text)["parameters"]
    except json.JSONDecodeError as error:
        raise ParametersFileError(f"error unmarshalling Bicep template parameters: {error}") from error
    resolved: dict[str, Any] = {}
    for name, entry in parameters.items():
        kind = types.get(name)
        if kind in ("array", "object") and isinstance(entry.get("value"), str) and "reference" not in entry:
            result = envsubst(entry["value"], env)
            if result.text == "" and result.has_unset:
                continue
            try:
                resolved[name] = json.loads(result.text)
            except json.JSONDecodeError as error:
                raise ParametersFileError(
                    f"substituting parameter '{name}' ({kind}): {error}: value '{result.text}' is not valid JSON"
                ) from error
            continue
        result = envsubst(json.dumps(entry, ensure_ascii=False), env)
        try:
            value = json.loads(result.text).get("value")
        except json.JSONDecodeError as error:
            raise ParametersFileError(f"error unmarshalling Bicep template parameters: {error}") from error
        if value is None or (value == "" and result.has_unset):
            continue
        resolved[name] = value
    return resolved


def file_value(kind: str, value: Any, default: Any) -> Any:
    """armParameterFileValue: None means 'not configured by the file' (the default, or a prompt, applies)."""
    if not isinstance(value, str):
        return value
    if kind == "bool":
        return _BOOL_WORDS.get(value)
    if kind == "int":
        return int(value) if re.fullmatch(r"[+-]?\d+", value) else None
    if kind == "string":
        if value != "":
            return value
        return value if isinstance(default, str) and value != default else None
    return value


def references(text: str) -> dict[str, str | None]:
    """Variable name -> its default (None without one), for every ${…} in the file."""
    return {m.group(1): (m.group(3) if m.group(2) else None) for m in _REFERENCE.finditer(text)}
