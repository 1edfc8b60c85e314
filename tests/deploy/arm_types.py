"""Resource bodies of our Bicep checked against the Bicep type definitions of the API versions they name.

The definitions are the Bicep compiler's own (Azure/bicep-types-az, vendored in schemas/bicep-types.json for
exactly the types we use; see schemas/vendor_bicep_types.py). What is checked, for each resource that is
declared (not `existing`), on the body as pycep parses it:

- every property name exists in the type (a misspelt `publicNetworkAcess` is silently ignored by ARM, or
  rejected only at deployment time);
- no read-only property is set, and every required property of an object written out is present;
- a literal value has the property's type: string, integer, boolean, one of the allowed literals of a closed
  union, and an array's items (or a `for` body) their item type.

Expressions (function calls, operators, interpolations, identifiers) are left alone: their values are known
only to a deployment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tests.deploy.bicep import parse, strip_quotes

TYPES_FILE = Path(__file__).resolve().parent / "schemas" / "bicep-types.json"
REQUIRED, READ_ONLY = 1, 2
# Bicep's own keywords in a resource body, not properties of the type.
BICEP_KEYWORDS = {"parent", "scope", "dependsOn"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@cache
def _document() -> dict[str, Any]:
    return json.loads(TYPES_FILE.read_text(encoding="utf-8"))


def known_resource_types() -> set[str]:
    return set(_document()["resources"])


def _type(reference: dict[str, str] | int) -> dict[str, Any]:
    index = reference if isinstance(reference, int) else int(reference["$ref"][2:])
    return _document()["types"][index]


@dataclass
class Checker:
    symbols: set[str]
    errors: list[str] = field(default_factory=list)

    def is_expression(self, value: Any) -> bool:
        if isinstance(value, dict):
            return any(key in value for key in ("function", "operator", "loop_type")) and len(value) <= 2
        if isinstance(value, str):
            return "${" in value or (_IDENTIFIER.fullmatch(value) is not None and value in self.symbols)
        return False

    def check(self, type_: dict[str, Any], value: Any, path: str) -> None:
        if self.is_expression(value):
            if isinstance(value, dict) and "loop_type" in value and type_["$type"] == "ArrayType":
                self.check(_type(type_["itemType"]), value["config"], f"{path}[for]")
            return
        kind = type_["$type"]
        if kind in ("ObjectType", "DiscriminatedObjectType"):
            self._object(type_, value, path)
        elif kind == "ArrayType":
            if not isinstance(value, list):
                self.errors.append(f"{path}: an array is expected, not {value!r}")
                return
            for index, item in enumerate(value):
                self.check(_type(type_["itemType"]), item, f"{path}[{index}]")
        elif kind == "UnionType":
            if not any(self._accepts(_type(element), value) for element in type_["elements"]):
                allowed = [_type(e).get("value", _type(e)["$type"]) for e in type_["elements"]]
                self.errors.append(f"{path}: {value!r} is none of {allowed}")
        elif not self._accepts(type_, value):
            self.errors.append(f"{path}: {value!r} is not a {type_.get('value', kind)}")

    def _accepts(self, type_: dict[str, Any], value: Any) -> bool:
        kind = type_["$type"]
        if kind == "AnyType":
            return True
        if kind == "StringType":
            return isinstance(value, str)
        if kind == "StringLiteralType":
            return value == type_["value"]
        if kind == "IntegerType":
            return isinstance(value, int) and not isinstance(value, bool)
        if kind == "BooleanType":
            return isinstance(value, bool)
        if kind in ("ObjectType", "DiscriminatedObjectType", "ArrayType", "UnionType"):
            probe = Checker(self.symbols)
            probe.check(type_, value, "")
            return not probe.errors
        return False

    def _properties(self, type_: dict[str, Any], value: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        if type_["$type"] == "ObjectType":
            return type_.get("properties", {}), type_.get("additionalProperties")
        properties = dict(type_.get("baseProperties", {}))
        discriminator = value.get(type_["discriminator"])
        if isinstance(discriminator, str) and discriminator in type_["elements"]:
            properties.update(_type(type_["elements"][discriminator]).get("properties", {}))
        return properties, None

    def _object(self, type_: dict[str, Any], value: Any, path: str) -> None:
        if not isinstance(value, dict):
            self.errors.append(f"{path}: an object is expected, not {value!r}")
            return
        properties, additional = self._properties(type_, value)
        given = {strip_quotes(key): item for key, item in value.items()}
        for name, item in given.items():
            where = f"{path}.{name}" if path else name
            if path == "" and name in BICEP_KEYWORDS:
                continue
            prop = properties.get(name)
            if prop is None:
                if additional is not None:
                    self.check(_type(additional), item, where)
                else:
                    self.errors.append(f"{where}: no such property")
                continue
            flags = prop.get("flags", 0)
            if flags & READ_ONLY and not flags & REQUIRED:
                self.errors.append(f"{where}: read-only")
                continue
            self.check(_type(prop["type"]), item, where)
        for name, prop in properties.items():
            flags = prop.get("flags", 0)
            if flags & REQUIRED and not flags & READ_ONLY and name not in given:
                self.errors.append(f"{path + '.' if path else ''}{name}: required, missing")


def _symbols(tree: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for section in ("parameters", "variables", "resources", "modules", "outputs"):
        names |= set(tree.get(section, {}))
    names |= _loop_variables(tree)
    return names


def _loop_variables(tree: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(tree, dict):
        loop = tree.get("loop_type")
        if isinstance(loop, dict):
            detail = loop.get("detail", {})
            found |= {detail[key] for key in ("item_name", "index_name") if key in detail}
        for item in tree.values():
            found |= _loop_variables(item)
    elif isinstance(tree, list):
        for item in tree:
            found |= _loop_variables(item)
    return found


def resource_body(resource: dict[str, Any]) -> dict[str, Any]:
    """The body of a declaration, under its `for` and `if (…)`."""
    body = resource["config"]
    if "loop_type" in body:
        body = body["config"]
    if "condition" in body:
        body = body["config"]
    return body


def check_file(path: Path) -> list[str]:
    tree = parse(path)
    checker = Checker(_symbols(tree))
    for symbol, resource in tree.get("resources", {}).items():
        if resource.get("existing"):
            continue
        name = f"{resource['type']}@{resource['api_version']}"
        resources = _document()["resources"]
        if name not in resources:
            checker.errors.append(f"{symbol}: {name} is not in {TYPES_FILE.name} (run vendor_bicep_types.py)")
            continue
        before = len(checker.errors)
        checker.check(_type(resources[name]["body"]), resource_body(resource), "")
        checker.errors[before:] = [f"{symbol} ({name}): {error}" for error in checker.errors[before:]]
    return checker.errors
