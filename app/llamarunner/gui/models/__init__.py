"""Qt item models behind the windows: the model library table and the log views."""

from .library_model import LibraryFilterModel, LibraryModel, LibraryRow
from .log_model import LogEntry, LogFilterModel, LogModel

__all__ = ["LibraryFilterModel", "LibraryModel", "LibraryRow", "LogEntry", "LogFilterModel",
           "LogModel"]
