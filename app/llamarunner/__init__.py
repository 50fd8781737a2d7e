"""LlamaRunner Pro: llama-server runners behind Ollama and OpenAI compatible APIs."""

__version__ = "0.1.0"
