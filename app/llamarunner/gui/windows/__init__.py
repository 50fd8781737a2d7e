"""The desktop app's windows: library, config editor, logs and meters."""
