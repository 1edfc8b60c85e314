"""An OpenAI-compatible load-balancing gateway for llama.cpp and Azure OpenAI backends."""
