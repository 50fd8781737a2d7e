"""Generate the app icon (16-256 px PNGs, app.ico, app.icns) and the tray state icons.

Run from the repository root with the GUI and bundle extras installed:
    QT_QPA_PLATFORM=offscreen python scripts/make_icons.py
The drawing code lives in llamarunner.gui.icons, so the PNGs and the on-the-fly fallback
are always the same pictures. app.ico (the Windows executable and installer) and app.icns
(the macOS app) are drawn at each of their sizes, 1024 px included, rather than scaled
from the PNGs, and written with Pillow. Commit all of resources/icons after changing the
drawing.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Windows shows 16-48 px in Explorer and lists, 256 px in large views.
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
# macOS picks among these (and their @2x pairs, up to 1024 px) for Finder and the Dock.
ICNS_SIZES = (16, 32, 64, 128, 256, 512, 1024)


def _to_pillow(image: Any) -> Any:
    """A QImage as a Pillow image (through PNG bytes, so no pixel-format guessing)."""
    from PIL import Image
    from PySide6.QtCore import QBuffer, QIODevice

    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return Image.open(io.BytesIO(bytes(buffer.data().data()))).convert("RGBA")


def write_platform_icons(out: Path, render: Any) -> list[Path]:
    """app.ico and app.icns, each size drawn by ``render(size)`` (a QImage)."""
    ico = [_to_pillow(render(size)) for size in ICO_SIZES]
    ico_path = out / "app.ico"
    ico[-1].save(ico_path, format="ICO", sizes=[(s, s) for s in ICO_SIZES],
                 append_images=ico[:-1])
    icns = [_to_pillow(render(size)) for size in ICNS_SIZES]
    icns_path = out / "app.icns"
    icns[-1].save(icns_path, format="ICNS", append_images=icns[:-1])
    return [ico_path, icns_path]


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
    try:
        written.extend(write_platform_icons(out, render_app_icon))
    except ImportError:
        print("Pillow is missing (pip install -e '.[bundle]'): app.ico and app.icns "
              "not written", file=sys.stderr)
        return 1
    for path in written:
        print(path.relative_to(ROOT))
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
