"""Configuration: every documented form, and bad configuration as a clear message, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from backends.fake import FakeUpstream
from gateway.settings import BackendKind, ConfigError, load_settings
from tests.gateway.gateway_process import gateway_process, workers_started


def test_json_backends_with_every_field():
    settings = load_settings(backends=json.dumps([
        {"name": "llama-1", "url": "http://127.0.0.1:8081/v1/", "kind": "llamacpp", "max_concurrency": 1},
        {"name": "az", "url": "https://x.openai.azure.com", "kind": "azure", "deployment": "gpt", "priority": 1,
         "weight": 3, "api_key": "secret", "api_version": "2024-06-01", "models": ["gpt-4o"]},
    ]))
    llama, azure = settings.backends
    assert llama.kind is BackendKind.LLAMACPP and llama.chat_completions_url == "http://127.0.0.1:8081/v1/chat/completions"
    assert azure.chat_completions_url == (
        "https://x.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-06-01"
    )
    assert "secret" not in repr(settings)


def test_plain_url_list_and_env(monkeypatch):
    monkeypatch.setenv("GATEWAY_BACKENDS", "http://10.0.0.5:8081/v1, http://llama-2:8082/v1")
    monkeypatch.setenv("GATEWAY_API_KEYS", "a,b")
    monkeypatch.setenv("GATEWAY_PORT", "9999")
    settings = load_settings()
    assert [b.name for b in settings.backends] == ["10.0.0.5:8081", "llama-2:8082"]
    assert settings.api_keys == ("a", "b") and settings.port == 9999 and settings.host == "127.0.0.1"


def test_config_file_toml_with_env_overriding(tmp_path, monkeypatch):
    path = tmp_path / "gateway.toml"
    path.write_text('max_attempts = 5\nport = 7000\n[[backends]]\nname = "a"\nurl = "http://127.0.0.1:1/v1"\n')
    monkeypatch.setenv("GATEWAY_CONFIG_FILE", str(path))
    monkeypatch.setenv("GATEWAY_PORT", "7001")
    settings = load_settings()
    assert settings.max_attempts == 5 and settings.port == 7001 and settings.backends[0].name == "a"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "GATEWAY_BACKENDS is required"),
        ({"GATEWAY_BACKENDS": "[{"}, "GATEWAY_BACKENDS"),
        ({"GATEWAY_BACKENDS": '[{"name": "a", "url": "ftp://x"}]'}, "GATEWAY_BACKENDS[0].url"),
        ({"GATEWAY_BACKENDS": '[{"name": "a", "url": "http://x", "kind": "azure"}]'}, "needs a 'deployment'"),
        ({"GATEWAY_BACKENDS": '[{"name": "a", "url": "http://x"}, {"name": "a", "url": "http://y"}]'}, "twice"),
        ({"GATEWAY_BACKENDS": '[{"name": "a", "url": "http://x", "wieght": 2}]'}, "GATEWAY_BACKENDS[0].wieght"),
        ({"GATEWAY_BACKENDS": "http://x", "GATEWAY_PORT": "eighty"}, "GATEWAY_PORT"),
        ({"GATEWAY_BACKENDS": "http://x", "GATEWAY_MAX_ATTEMPTS": "0"}, "GATEWAY_MAX_ATTEMPTS"),
        ({"GATEWAY_BACKENDS": "http://x", "GATEWAY_CONFIG_FILE": "/nonexistent.toml"}, "cannot read"),
        ({"GATEWAY_BACKENDS": "http://x", "GATEWAY_SHUTDOWN_GRACE": "-1"}, "GATEWAY_SHUTDOWN_GRACE"),
        ({"GATEWAY_BACKENDS": "http://x", "GATEWAY_SHUTDOWN_GRACE": "soon"}, "GATEWAY_SHUTDOWN_GRACE"),
        ({"GATEWAY_BACKENDS": "http://x", "GATEWAY_SHUTDOWN_GRACE": "inf"}, "GATEWAY_SHUTDOWN_GRACE"),
    ],
)
def test_bad_config_exits_with_one_paragraph(env, fragment):
    result = subprocess.run(
        [sys.executable, "-m", "gateway"],
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | env,
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


HI = [{"role": "user", "content": "hi"}]


async def test_python_m_gateway_serves_and_logs_json():
    upstream = FakeUpstream(name="up", reply_text="from a real process")
    async with upstream.serve():
        backends = json.dumps([{"name": "up", "url": upstream.openai_url}])
        async with gateway_process({"GATEWAY_BACKENDS": backends}) as (client, process):
            reply = await client.chat.completions.create(model="m", messages=HI)
        out, err = process.communicate(timeout=10)
    assert reply.choices[0].message.content == "from a real process"
    events = [json.loads(line)["event"] for line in out.decode().splitlines()]
    # Served at the first attempt: the canonical request line tells it all (attempt lines are for failovers).
    # Then the process was stopped (SIGTERM), with nothing in flight to wait for.
    assert events == ["gateway_starting", "request", "gateway_draining"]
    assert b"Traceback" not in err


def test_config_error_type_is_raised_in_process():
    with pytest.raises(ConfigError, match="GATEWAY_MAX_ATTEMPTS"):
        load_settings(backends="http://x", max_attempts=-1)


async def test_workers_share_one_port_and_stop_together():
    upstream = FakeUpstream(name="up")
    async with upstream.serve():
        env = {"GATEWAY_WORKERS": "2", "GATEWAY_BACKENDS": upstream.openai_url}
        async with gateway_process(env) as (client, process):
            early = await workers_started(process, 2)
            for _ in range(6):
                await client.chat.completions.create(model="m", messages=HI)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    lines = b"".join(early).decode().splitlines() + out.decode().splitlines()
    starts = [json.loads(line) for line in lines if '"gateway_starting"' in line]
    assert len(starts) == 2  # two workers
