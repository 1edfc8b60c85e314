"""The images: pinned slim bases, a non-root user, a HEALTHCHECK on the port the app listens on, a 0.0.0.0
bind, and a build context that holds every file a COPY asks for."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy import dockerfiles
from tests.deploy.apps import App

REPO = Path(__file__).resolve().parents[2]
IMAGES = sorted(dockerfiles.DOCKERFILES)


@pytest.mark.parametrize("image", IMAGES)
def test_every_base_is_a_pinned_slim_image(image: str) -> None:
    for stage in dockerfiles.stages(dockerfiles.DOCKERFILES[image]):
        if stage.base in {s.name for s in dockerfiles.stages(dockerfiles.DOCKERFILES[image])}:
            continue  # FROM an earlier stage
        repository, _, tag = stage.base.partition(":")
        assert "$" not in stage.base, f"{image}: unresolved base {stage.base}"
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim(-\w+)?", tag), (
            f"{image}: {stage.base} is not a pinned slim tag"
        )
        assert repository == "python"


@pytest.mark.parametrize("image", IMAGES)
def test_runs_as_a_non_root_user(image: str) -> None:
    users = dockerfiles.values(dockerfiles.final_stage(dockerfiles.DOCKERFILES[image]), "USER")
    assert users, f"{image}: no USER in the final stage"
    assert users[-1].split(":")[0] not in {"root", "0"}


@pytest.mark.parametrize("image", IMAGES)
def test_healthcheck_probes_the_exposed_port(image: str, app_specs: dict[str, App]) -> None:
    stage = dockerfiles.final_stage(dockerfiles.DOCKERFILES[image])
    command = " ".join(dockerfiles.healthcheck_command(stage))
    exposed = {
        int(port.split("/")[0]) for value in dockerfiles.values(stage, "EXPOSE") for port in value.split()
    }
    assert exposed == {app_specs[image].port}
    probed = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)/", command)}
    if not probed:  # the chat image reads its port from CHAT_PORT
        probed = {int(dockerfiles.env(stage)["CHAT_PORT"])}
    assert probed == exposed


def test_gateway_and_chat_bind_all_interfaces() -> None:
    gateway = dockerfiles.env(dockerfiles.final_stage(dockerfiles.DOCKERFILES["gateway"]))
    chat = dockerfiles.env(dockerfiles.final_stage(dockerfiles.DOCKERFILES["chat"]))
    assert gateway["GATEWAY_HOST"] == "0.0.0.0" and gateway["GATEWAY_PORT"] == "8080"
    assert chat["CHAT_HOST"] == "0.0.0.0"


def test_llama_binds_all_interfaces() -> None:
    from backends.llamacpp.llama_server import parse_args

    stage = dockerfiles.final_stage(dockerfiles.DOCKERFILES["llama"])
    entrypoint = dockerfiles.exec_form(dockerfiles.values(stage, "ENTRYPOINT")[-1])
    command = dockerfiles.exec_form(dockerfiles.values(stage, "CMD")[-1])
    args = parse_args(entrypoint[3:] + command)
    assert (args.host, args.port) == ("0.0.0.0", 8080)


@pytest.mark.parametrize("image", IMAGES)
def test_every_copied_path_exists_and_survives_the_ignore_file(image: str) -> None:
    dockerfile = dockerfiles.DOCKERFILES[image]
    ignore = dockerfiles.ignore_file(dockerfile)
    for stage in dockerfiles.stages(dockerfile):
        for source in dockerfiles.copy_sources(stage):
            matches = (
                list(REPO.glob(source.rstrip("/"))) if any(c in source for c in "*?[") else [REPO / source]
            )
            assert matches and all(m.exists() for m in matches), f"{image}: COPY {source} does not exist"
            assert not dockerfiles.is_ignored(source, ignore), (
                f"{image}: {source} is excluded by {ignore.name}"
            )


def test_the_ignore_file_keeps_secrets_and_virtualenvs_out() -> None:
    ignore = REPO / ".dockerignore"
    for path in (
        ".env",
        ".venv/bin/python",
        "gateway/__pycache__/app.cpython-311.pyc",
        ".git/config",
        "x.gguf",
    ):
        assert dockerfiles.is_ignored(path, ignore), path
    for path in (
        "gateway/app.py",
        "backends/llamacpp/server.py",
        "pyproject.toml",
        "chat-client/pyproject.toml",
    ):
        assert not dockerfiles.is_ignored(path, ignore), path


def test_the_gateway_image_installs_the_gateway_requirements_and_nothing_else() -> None:
    """Run the Dockerfile's own requirement extraction and compare it with pyproject.toml."""
    builder = dockerfiles.stages(dockerfiles.DOCKERFILES["gateway"])[0]
    run = next(value for value in dockerfiles.values(builder, "RUN") if "tomllib" in value)
    words = shlex.split(run.split(">")[0])
    code = words[words.index("-c") + 1]
    produced = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["azure"]
    assert produced.stdout.splitlines() == expected
    assert not any("llama" in requirement for requirement in expected)
    copied = [
        source
        for stage in dockerfiles.stages(dockerfiles.DOCKERFILES["gateway"])
        for source in dockerfiles.copy_sources(stage)
    ]
    assert sorted(copied) == ["gateway/", "pyproject.toml"]
