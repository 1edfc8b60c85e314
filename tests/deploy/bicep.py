"""Our Bicep, read with pycep-parser, and a small evaluator for the constant parts of its expressions.

pycep turns a .bicep file into JSON: parameters, variables, resources, modules, outputs, with expressions as
nested {"function": …} / {"operator": …} objects and strings as-is (an interpolated string keeps its
"${…}" text; an identifier and a string literal both come out as a plain string). `evaluate` folds what
can be known before a deployment (literals, parameters, variables, the functions we use) and leaves the
rest to the names the caller binds, e.g. a fake module output.
"""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
BICEP_DIR = REPO / "infra" / "bicep"
MAIN = BICEP_DIR / "main.bicep"

_INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@cache
def parse(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def bicep_files() -> list[Path]:
    return sorted(BICEP_DIR.rglob("*.bicep"))


def module_calls(path: Path) -> dict[str, dict[str, Any]]:
    """Module symbol -> {"path", "loop", "condition", "params"} of one file: the resolved file, the loop (or
    None), the `if (…)` expression (or None) and the parameters passed."""
    calls = {}
    for symbol, module in parse(path).get("modules", {}).items():
        config = module["config"]
        loop = config.get("loop_type")
        body = config["config"] if loop else config
        condition = body.get("condition")
        if condition is not None:
            body = body["config"]
        calls[symbol] = {
            "path": (path.parent / module["detail"]["path"]).resolve(),
            "loop": loop,
            "condition": condition,
            "params": body.get("params", {}),
        }
    return calls


def decorators(declaration: dict[str, Any]) -> dict[str, Any]:
    return {d["type"]: d.get("argument") for d in declaration.get("decorators", [])}


def strip_quotes(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def ns(**attributes: Any) -> SimpleNamespace:
    """A stand-in for a resource or module symbol inside interpolations: ns(outputs=ns(uri='https://…'))."""
    return SimpleNamespace(**attributes)


class FakeOutputs:
    """A module's outputs before a deployment: `<module>.<output>` placeholders."""

    def __init__(self, module: str) -> None:
        self._module = module

    def __getattr__(self, name: str) -> str:
        return f"<{self._module}.{name}>"


def main_scope(**bindings: Any) -> dict[str, Any]:
    """main.bicep's scope with every module's outputs faked, unless the caller binds the module."""
    fakes = {name: ns(outputs=FakeOutputs(name)) for name in module_calls(MAIN)}
    return scope_of(MAIN, **{**fakes, **bindings})


def app_env(symbol: str, **bindings: Any) -> list[dict[str, Any]]:
    """The env list main.bicep passes to an app module, evaluated (faked module outputs, see main_scope)."""
    return evaluate(module_calls(MAIN)[symbol]["params"].get("env", []), main_scope(**bindings))


def scope_of(path: Path, **bindings: Any) -> dict[str, Any]:
    """Parameters (at their defaults) and variables of a file, plus the caller's bindings, which win."""
    tree = parse(path)
    scope: dict[str, Any] = {}
    for name, param in tree.get("parameters", {}).items():
        if param.get("default") is not None:
            scope[name] = param["default"]
    scope.update(bindings)
    for name, variable in tree.get("variables", {}).items():
        if name in scope:
            continue
        try:
            scope[name] = evaluate(variable["value"], scope)
        except (KeyError, NameError, AttributeError, TypeError, NotImplementedError):
            pass  # depends on something only a deployment knows
    return scope


def evaluate(expression: Any, scope: dict[str, Any]) -> Any:
    if expression is None or isinstance(expression, (bool, int, float)):
        return expression
    if isinstance(expression, str):
        if expression in scope and _IDENTIFIER.fullmatch(expression):
            return scope[expression]
        return _interpolate(expression, scope)
    if isinstance(expression, list):
        return [evaluate(item, scope) for item in expression]
    if "function" in expression:
        function = expression["function"]
        if function["type"] == "map":  # map(array, x => body): the lambda is evaluated per item
            items, body = (function["parameters"] or {}).values()
            detail = body["detail"]
            return [
                evaluate(detail["expression"], {**scope, detail["var_1"]: item})
                for item in evaluate(items, scope)
            ]
        args = [evaluate(arg, scope) for arg in (function.get("parameters") or {}).values()]
        return _call(function["type"], args)
    if "operator" in expression:
        return _operate(expression["operator"], scope)
    if "loop_type" in expression:
        return _loop(expression, scope)
    return {strip_quotes(key): evaluate(value, scope) for key, value in expression.items()}


class _Object(dict):  # type: ignore[type-arg]
    """A Bicep object inside an interpolation: `item.name` reads its key, as in Bicep."""

    def __getattr__(self, name: str) -> Any:
        try:
            return _as_bicep(self[name])
        except KeyError:
            raise AttributeError(name) from None


def _as_bicep(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, _Object):
        return _Object(value)
    if isinstance(value, list):
        return [_as_bicep(item) for item in value]
    return value


class _Locals(dict):  # type: ignore[type-arg]
    def __getitem__(self, name: str) -> Any:
        return _as_bicep(super().__getitem__(name))


def _interpolate(text: str, scope: dict[str, Any]) -> str:
    # The expressions we interpolate (`i + 1`, `names[i]`, `server.properties.fqdn`) read the same in Python.
    def replace(match: re.Match[str]) -> str:
        value = eval(match.group(1), {"__builtins__": {}}, _Locals(scope))
        return json.dumps(value) if isinstance(value, (list, dict)) else str(value)

    return _INTERPOLATION.sub(replace, text)


def _call(name: str, args: list[Any]) -> Any:
    if name == "string":
        value = args[0]
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)
    if name == "concat":
        if all(isinstance(arg, list) for arg in args):
            return [item for arg in args for item in arg]
        return "".join(str(arg) for arg in args)
    if name == "replace":
        return args[0].replace(args[1], args[2])
    if name == "base64":
        return base64.b64encode(args[0].encode()).decode()
    if name == "json":
        return json.loads(args[0])
    if name == "empty":
        return not args[0]
    if name == "union":
        merged: dict[str, Any] = {}
        for arg in args:
            merged.update(arg)
        return merged
    if name == "length":
        return len(args[0])
    if name == "range":
        return list(range(args[0], args[0] + args[1]))
    raise NotImplementedError(f"Bicep function {name}() in a test evaluation")


def _operate(operator: dict[str, Any], scope: dict[str, Any]) -> Any:
    kind, operands = operator["type"], operator["operands"]
    if kind == "property_accessor":
        return _access(evaluate(operands["operand_1"], scope), operands["operand_2"], scope)
    if kind == "index_accessor":
        return evaluate(operands["operand_1"], scope)[evaluate(operands["operand_2"], scope)]
    if kind == "conditional":
        chosen = "true_value" if evaluate(operands["condition"], scope) else "false_value"
        return evaluate(operands[chosen], scope)
    if kind == "not":
        return not evaluate(operands["bool_value"], scope)
    values = [evaluate(operand, scope) for operand in operands.values()]
    if kind == "equals":
        return values[0] == values[1]
    if kind == "not_equals":
        return values[0] != values[1]
    if kind == "greater_than":
        return values[0] > values[1]
    if kind == "or":
        return bool(values[0]) or bool(values[1])
    if kind == "and":
        return bool(values[0]) and bool(values[1])
    if kind == "multiply":
        return values[0] * values[1]
    if kind == "add":
        return values[0] + values[1]
    raise NotImplementedError(f"Bicep operator {kind} in a test evaluation")


def _access(base: Any, path: Any, scope: dict[str, Any]) -> Any:
    """`base.a.b`: pycep nests the chain as {"operand_1": "a", "operand_2": "b"}; names are not evaluated.
    `base.a[0].b` nests an index accessor in the chain: {"operand_1": "a", "operand_2": 0}, whose index is."""
    if isinstance(path, dict):
        accessor = path["operator"]
        operands = accessor["operands"]
        if accessor["type"] == "property_accessor":
            return _access(_access(base, operands["operand_1"], scope), operands["operand_2"], scope)
        if accessor["type"] == "index_accessor":
            return _access(base, operands["operand_1"], scope)[evaluate(operands["operand_2"], scope)]
        raise NotImplementedError(f"Bicep accessor {accessor['type']} in a test evaluation")
    return _member(base, path)


def _member(base: Any, name: str) -> Any:
    return base[name] if isinstance(base, dict) else getattr(base, name)


def _loop(expression: dict[str, Any], scope: dict[str, Any]) -> list[Any]:
    detail = expression["loop_type"]["detail"]
    items = evaluate(detail["array_name"], scope)
    results = []
    for index, item in enumerate(items):
        inner = dict(scope)
        if expression["loop_type"]["type"] == "array_index":
            inner[detail["item_name"]] = item
            inner[detail["index_name"]] = index
        else:
            inner[detail["item_name"]] = item
        results.append(evaluate(expression["config"], inner))
    return results
