"""The bootstrap's proof of the llama.cpp build (scripts/prove_llamacpp.py): it passes on a build this CPU
runs, and a crash is one clear message naming the signal, never a traceback or a hang."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.prove_llamacpp import ProofFailed, prove_binding

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def run_proof(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scripts.prove_llamacpp"], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=180, check=False)


def test_the_build_generates_a_token_with_both_llama_cpp_python_and_llama_server(llama_cpp_installed) -> None:
    result = run_proof()

    assert result.returncode == 0, result.stderr
    assert "each generated a token" in result.stdout


def test_a_llama_server_that_crashes_stops_the_proof_with_the_signal_named(
    llama_cpp_installed, tmp_path: Path
) -> None:
    crashing = tmp_path / "llama-server"
    crashing.write_text("#!/bin/sh\necho 'illegal instruction ahead'\nkill -ILL $$\n")
    crashing.chmod(0o755)

    result = run_proof(LLAMA_SERVER_BIN=str(crashing))

    assert result.returncode == 1
    assert "llama-server crashed with SIGILL" in result.stderr
    assert "illegal instruction ahead" in result.stderr  # its last output comes with the message
    assert "Traceback" not in result.stderr


def test_a_binding_that_cannot_load_the_model_fails_the_proof(llama_cpp_installed, tmp_path: Path) -> None:
    model = tmp_path / "broken.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)

    with pytest.raises(ProofFailed, match="llama-cpp-python exited with code 1"):
        prove_binding(model)
