"""Pulled models: our own Ollama-layout store, registry and Hugging Face pulls, create."""
