"""Write bicep-types.json: the Bicep type definitions of exactly the resource types our templates declare.

    python tests/deploy/schemas/vendor_bicep_types.py CHECKOUT COMMIT

CHECKOUT holds generated/**/types.json of Azure/bicep-types-az at COMMIT (a clone, or just those files).

For each `type@apiVersion` used under infra/bicep, the ResourceType of generated/**/types.json and every type
it references, renumbered into one list ({"$ref": "#/N"} points into it). The files are the ones the Bicep
compiler itself ships for these API versions; nothing else is changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

from tests.deploy.bicep import bicep_files, parse


def used_types() -> set[str]:
    return {
        f"{resource['type']}@{resource['api_version']}"
        for path in bicep_files()
        for resource in parse(path).get("resources", {}).values()
    }


def main(clone: Path, commit: str) -> None:
    wanted = used_types()
    out: list[dict[str, Any]] = []
    resources: dict[str, dict[str, Any]] = {}
    for path in sorted(clone.glob("generated/**/types.json")):
        providers = {name.split("@")[0].split("/")[0].lower() for name in wanted}
        if path.parent.parent.name not in providers:
            continue
        types = json.loads(path.read_text(encoding="utf-8"))
        for index, item in enumerate(types):
            if (
                item.get("$type") == "ResourceType"
                and item["name"] in wanted
                and item["name"] not in resources
            ):
                resources[item["name"]] = {
                    "file": str(path.relative_to(clone)),
                    "body": _copy(types, int(item["body"]["$ref"][2:]), out, {}),
                }
    missing = wanted - set(resources)
    if missing:
        raise SystemExit(f"not found in {clone}: {sorted(missing)}")
    document = {
        "source": "https://github.com/Azure/bicep-types-az",
        "commit": commit,
        "resources": dict(sorted(resources.items())),
        "types": out,
    }
    (HERE / "bicep-types.json").write_text(
        json.dumps(document, separators=(",", ":")) + "\n", encoding="utf-8"
    )


def _copy(types: list[dict[str, Any]], index: int, out: list[dict[str, Any]], seen: dict[int, int]) -> int:
    """Copy types[index] and what it references into `out`; return its new index."""
    if index in seen:
        return seen[index]
    seen[index] = len(out)
    out.append({})
    out[seen[index]] = _renumber(types[index], types, out, seen)
    return seen[index]


def _renumber(
    value: Any, types: list[dict[str, Any]], out: list[dict[str, Any]], seen: dict[int, int]
) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$ref"} and value["$ref"].startswith("#/"):
            return {"$ref": f"#/{_copy(types, int(value['$ref'][2:]), out, seen)}"}
        return {key: _renumber(item, types, out, seen) for key, item in value.items()}
    if isinstance(value, list):
        return [_renumber(item, types, out, seen) for item in value]
    return value


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
