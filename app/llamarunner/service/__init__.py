"""The composition root: the Service wires config, library, runners and listeners.

It sits above every other package but the front ends (cli, headless, gui), so every
import points down: core (the kernel) ← config ← library ← runtime ← runner ← proxy ←
service.
"""

from .service import ModelFile, Service, run_until_stopped

__all__ = ["ModelFile", "Service", "run_until_stopped"]
