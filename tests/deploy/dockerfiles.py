"""The three Dockerfiles, read with dockerfile-parse: base images, the final stage's instructions, ENV,
ENTRYPOINT/CMD, and which files a COPY takes from the build context (the repository root)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]

DOCKERFILES = {
    "gateway": REPO / "gateway" / "Dockerfile",
    "chat": REPO / "chat-client" / "Dockerfile",
    "llama": REPO / "backends" / "llamacpp" / "Dockerfile",
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def stages(path: Path) -> list[Stage]:
    parser = DockerfileParser(path=str(path), env_replace=False)
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "ARG" and not result:
            name, _, default = value.partition("=")
            global_args[name.strip()] = default.strip()
        elif instruction == "FROM":
            words = [w for w in value.split() if not w.startswith("--")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            result.append(Stage(base, name))
        elif result:
            result[-1].instructions.append((instruction, value))
    return result


def final_stage(path: Path) -> Stage:
    return stages(path)[-1]


def values(stage: Stage, instruction: str) -> list[str]:
    return [value for name, value in stage.instructions if name == instruction]


def env(stage: Stage) -> dict[str, str]:
    """ENV of a stage, in either form (KEY=VALUE ... or KEY VALUE)."""
    result: dict[str, str] = {}
    for value in values(stage, "ENV"):
        words = shlex.split(value)
        if words and "=" not in words[0]:
            result[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, item = word.partition("=")
            result[key] = item
    return result


def exec_form(value: str) -> list[str]:
    words = json.loads(value)
    assert isinstance(words, list), f"not the exec (JSON array) form: {value}"
    return words


def healthcheck_command(stage: Stage) -> list[str]:
    checks = values(stage, "HEALTHCHECK")
    assert checks, "no HEALTHCHECK"
    _, _, command = checks[-1].partition("CMD")
    return exec_form(command.strip())


def copy_sources(stage: Stage) -> list[str]:
    """Paths a stage copies from the build context (COPY without --from)."""
    sources = []
    for value in values(stage, "COPY") + values(stage, "ADD"):
        words = shlex.split(value)
        if any(word.startswith("--from") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        sources.extend(words[:-1])
    return sources


def ignore_file(dockerfile: Path) -> Path:
    """BuildKit reads <Dockerfile>.dockerignore when there is one, else the context's .dockerignore."""
    specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
    return specific if specific.exists() else REPO / ".dockerignore"


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip().strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out += "/?"
                i += 1
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"(/.*)?")


def is_ignored(relative_path: str, ignore: Path) -> bool:
    """.dockerignore semantics: the last matching pattern wins, `!` re-includes, a match covers a subtree."""
    ignored = False
    path = relative_path.strip("/")
    for line in ignore.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if _pattern_regex(line.lstrip("!")).fullmatch(path):
            ignored = not negate
    return ignored
