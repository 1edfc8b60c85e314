"""The wheel that the Dockerfile installs carries the templates, static files and migrations."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

CHAT_CLIENT = Path(__file__).resolve().parents[2] / "chat-client"


def test_wheel_contains_package_data(tmp_path):
    # Build from a copy: a build in place would leave build/ behind in the work tree.
    source = tmp_path / "chat-client"
    shutil.copytree(CHAT_CLIENT, source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-build-isolation",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("chat_client-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in [
        "chat_client/__main__.py",
        "chat_client/templates/base.html",
        "chat_client/templates/chat.html",
        "chat_client/templates/index.html",
        "chat_client/templates/error.html",
        "chat_client/static/chat.js",
        "chat_client/static/style.css",
        "chat_client/static/favicon.svg",
        "chat_client/migrations/env.py",
        "chat_client/migrations/versions/0001_chats_and_messages.py",
    ]:
        assert expected in names
    assert not any(name.startswith(("tests/", "gateway/", "backends/")) for name in names)


def test_dockerfile_runs_the_chat_app_as_a_non_root_user_with_a_healthcheck():
    dockerfile = (CHAT_CLIENT / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile or "python:3.11." in dockerfile
    # USER 10001:10001 is the chat user, numeric so that runtimes can check it is not root (hadolint DL3066).
    assert "USER 10001:10001" in dockerfile and "HEALTHCHECK" in dockerfile
    assert "/healthz" in dockerfile
    assert "CHAT_HOST=0.0.0.0" in dockerfile
    assert "COPY chat-client/ " in dockerfile and "COPY . " not in dockerfile
    assert '"-m", "chat_client"' in dockerfile
