"""The desktop front end: Qt (PySide6) views over the same Service the headless mode runs."""
