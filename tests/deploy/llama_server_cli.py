"""llama-server's command line, read the way llama-server reads it, for the flags this project passes.

The llama image runs llama.cpp release b11176 (backends/llamacpp/Dockerfile). FLAGS holds every flag that the
image, docker-compose.yml, the Bicep and the local launcher (`backends.llamacpp.llama_server.server_argv`) pass,
and whether it takes a value. Each was read from the option table in llama.cpp's common/arg.cpp (`add_opt(
common_arg({names}, value hint, help, handler).set_examples(...))`) of two releases either side of b11176:
b10454 (llama-cpp-python 0.3.35's vendored llama.cpp, commit 4df29be4f) and b11312 (0.3.36's, commit
0c1e57098, the local build). In both each flag is registered for llama-server (the server or the common
example) with the same arity, and handled alike (`--pooling mean`, `--cache-ram` in MiB), so b11176 has it.
Between those two releases llama-server did drop flags (`--no-mmap`, `--mmap`, `--mlock`, `--direct-io`):
a flag is added here only after that check. The routes the gateway reads (/health, /props with
`total_slots`, /metrics, /slots, /v1/models, /v1/embeddings, /v1/responses) are registered in both too
(tools/server/server.cpp).

The rules are common_params_parse_ex's: a word that is no known flag is an error ("invalid argument"), a flag
with a value takes the next word, and a repeated flag keeps its last value with a "DEPRECATED" warning,
which this parser refuses instead, so that nothing is set in two places.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.deploy import dockerfiles

# Where the official image keeps the server (.devops/cpu.Dockerfile, target `server`).
IMAGE_BINARY = "/app/llama-server"
# flag -> takes a value
FLAGS: dict[str, bool] = {
    "--model": True,
    "--alias": True,
    "--host": True,
    "--port": True,
    "--threads": True,
    "--threads-batch": True,
    "--parallel": True,
    "--ctx-size": True,
    "--cont-batching": False,
    "--metrics": False,
    "--slots": False,
    "--cache-ram": True,
    "--no-webui": False,
    "--embeddings": False,
    "--pooling": True,
}
POOLING = {"none", "mean", "cls", "last", "rank"}


class InvalidCommandLine(Exception):
    """llama-server would refuse this command line (or, for a repeated flag, warn); the message says why."""


def parse(argv: list[str]) -> dict[str, str | None]:
    """The flags of a llama-server command line (without the binary): a value, or None for a switch."""
    result: dict[str, str | None] = {}
    words = iter(argv)
    for word in words:
        if word not in FLAGS:
            raise InvalidCommandLine(f"not a llama-server flag this project checked: {word!r}")
        if word in result:
            raise InvalidCommandLine(f"{word} is given twice (llama-server keeps the last one, with a warning)")
        if not FLAGS[word]:
            result[word] = None
            continue
        value = next(words, None)
        if value is None:
            raise InvalidCommandLine(f"{word} expects a value")
        result[word] = value
    if result.get("--pooling", "mean") not in POOLING:
        raise InvalidCommandLine(f"--pooling must be one of {sorted(POOLING)}")
    for name in ("--port", "--threads", "--threads-batch", "--parallel", "--ctx-size", "--cache-ram"):
        value = result.get(name)
        if value is not None and not value.lstrip("-").isdigit():
            raise InvalidCommandLine(f"{name} takes an integer, not {value!r}")
    return result


@dataclass(frozen=True)
class ServerCommand:
    """What a llama-server command line sets that the deployments care about (None: llama-server's default)."""

    flags: dict[str, str | None]

    @classmethod
    def of(cls, argv: list[str]) -> ServerCommand:
        return cls(parse(argv))

    def _int(self, name: str) -> int | None:
        value = self.flags.get(name)
        return None if value is None else int(value)

    @property
    def model(self) -> str | None:
        return self.flags.get("--model")

    @property
    def alias(self) -> str | None:
        return self.flags.get("--alias")

    @property
    def host(self) -> str | None:
        return self.flags.get("--host")

    @property
    def port(self) -> int | None:
        return self._int("--port")

    @property
    def threads(self) -> int | None:
        return self._int("--threads")

    @property
    def parallel(self) -> int | None:
        return self._int("--parallel")

    @property
    def ctx_size(self) -> int | None:
        return self._int("--ctx-size")


def image_command(args: list[str] | None = None) -> ServerCommand:
    """The llama image's ENTRYPOINT (llama-server itself) followed by `args`, or by its CMD when None: what
    Docker, compose's `command` and Container Apps' `args` run."""
    stage = dockerfiles.final_stage(dockerfiles.DOCKERFILES["llama"])
    entrypoint = dockerfiles.exec_form(dockerfiles.values(stage, "ENTRYPOINT")[-1])
    assert entrypoint[0] == IMAGE_BINARY, f"the llama image's entrypoint is not llama-server: {entrypoint}"
    if args is None:
        args = dockerfiles.exec_form(dockerfiles.values(stage, "CMD")[-1])
    return ServerCommand.of(entrypoint[1:] + args)
