"""Reusable Qt widgets for the desktop app's windows."""
