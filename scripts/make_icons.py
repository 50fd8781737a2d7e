"""Generate the app icon (16-256 px) and the four 64 px tray state icons into resources/icons.

Run from the repository root with the GUI extras installed:
    QT_QPA_PLATFORM=offscreen python scripts/make_icons.py
The drawing code lives in llamarunner.gui.icons, so the PNGs and the on-the-fly fallback
are always the same pictures. Commit the PNGs after changing the drawing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    # Drawing needs no screen; offscreen works on headless build machines too.
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(ROOT / "app"))
    from PySide6.QtGui import QGuiApplication

    from llamarunner.gui.icons import (
        APP_SIZES,
        STATE_SIZE,
        IconState,
        app_icon_file,
        render_app_icon,
        render_state_icon,
        state_icon_file,
    )

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    out = ROOT / "resources" / "icons"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for size in APP_SIZES:
        path = out / app_icon_file(size)
        if not render_app_icon(size).save(str(path)):
            print(f"cannot write {path}", file=sys.stderr)
            return 1
        written.append(path)
    for state in IconState:
        path = out / state_icon_file(state)
        if not render_state_icon(state, STATE_SIZE).save(str(path)):
            print(f"cannot write {path}", file=sys.stderr)
            return 1
        written.append(path)
    for path in written:
        print(path.relative_to(ROOT))
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
