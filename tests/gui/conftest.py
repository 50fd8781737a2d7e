"""GUI tests run without a screen: Qt's offscreen platform, chosen before Qt starts."""

from __future__ import annotations

import os

# pytest-qt creates the QApplication lazily, after conftest import: setting the platform
# here is early enough. An explicit choice (xcb under Xvfb for tray tests) is kept.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
