"""ollama package."""
