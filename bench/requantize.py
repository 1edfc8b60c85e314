"""`python -m bench.requantize IN.gguf OUT.gguf Q8_0`: the same weights in another llama.cpp quantisation.

For measurements only: the embedded SmolLM2 is Q4_1, a type for which ggml's CPU backend has no batched
kernel (its repack, llamafile and tiled matmuls cover Q4_0, Q8_0, IQ4_NL and the K-quants), so it cannot show
what continuous batching does with one. Every Q4_1 tensor is dequantised and quantised again to the target
type (Q8_0 keeps the Q4_1 values almost exactly; Q4_0 loses a little); every other tensor and all metadata are
copied. Uses gguf-py from the pinned llama.cpp source that scripts/build_llamacpp.sh unpacked:

    PYTHONPATH=~/.cache/llm-gateway/llama.cpp/src/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py \\
        .venv/bin/python -m bench.requantize SmolLM2-135M-Instruct.Q4_1.gguf /tmp/SmolLM2-135M-Instruct.Q8_0.gguf Q8_0
"""

from __future__ import annotations

import argparse

import gguf  # type: ignore[import-not-found]
from gguf.quants import dequantize, quantize  # type: ignore[import-not-found]

# general.file_type of a model whose tensors are mostly of that type (llama.h's LLAMA_FTYPE_MOSTLY_*).
FILE_TYPES = {"Q4_0": 2, "Q8_0": 7}


def requantize(source: str, target: str, type_name: str) -> None:
    qtype = gguf.GGMLQuantizationType[type_name]
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(target, arch=reader.get_field(gguf.Keys.General.ARCHITECTURE).contents())
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by the writer itself
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        value = FILE_TYPES[type_name] if field.name == gguf.Keys.General.FILE_TYPE else field.contents()
        writer.add_key_value(field.name, value, value_type, sub_type=sub_type)
    tensors = []
    for tensor in reader.tensors:
        data, tensor_type = tensor.data, tensor.tensor_type
        if tensor_type == gguf.GGMLQuantizationType.Q4_1:
            data, tensor_type = quantize(dequantize(data, tensor_type), qtype), qtype
        tensors.append(data)
        writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for data in tensors:
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.requantize", description=__doc__.split("\n\n")[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("type", choices=sorted(FILE_TYPES))
    args = parser.parse_args(argv)
    requantize(args.source, args.target, args.type)
    print(f"wrote {args.target}")


if __name__ == "__main__":
    main()
