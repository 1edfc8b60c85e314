"""A llama.cpp CPU backend: llama-cpp-python's OpenAI-compatible server with the embedded SmolLM2 model.

`model` locates and checks GGUF files and needs nothing compiled; `server` imports llama_cpp.
"""
