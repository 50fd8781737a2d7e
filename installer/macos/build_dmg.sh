#!/usr/bin/env bash
# Package the LlamaRunner Pro app into a drag-to-Applications disk image.
#
#   installer/macos/build_dmg.sh [APP] [DMG]
#
# APP defaults to "dist/LlamaRunner Pro.app" (installer/build_bundle.py makes it, and
# installer/selftest.py should have passed on it); DMG defaults to
# dist/LlamaRunnerPro-<version>-macos-<arch>.dmg, the version read from the app.
# The app is signed and notarized first and the image afterwards, both through
# sign_and_notarize.sh, which leaves them unsigned (and says so) when no identity is
# configured. Written for the bash 3.2 that macOS ships.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VOLUME_NAME="LlamaRunner Pro"

log() { printf '%s\n' "build_dmg: $*" >&2; }
die() { log "error: $*"; exit 1; }

main() {
    [[ $# -le 2 ]] || die "usage: $(basename "$0") [APP] [DMG]"
    local app="${1:-$REPO/dist/LlamaRunner Pro.app}"
    app="${app%/}"
    [[ -d "$app" && -f "$app/Contents/Info.plist" ]] \
        || die "$app is not an app bundle: run installer/build_bundle.py first"

    local version arch dmg
    version="$(plutil -extract CFBundleShortVersionString raw -o - "$app/Contents/Info.plist")" \
        || die "$app/Contents/Info.plist has no CFBundleShortVersionString"
    arch="$(uname -m)"
    dmg="${2:-$(dirname "$app")/LlamaRunnerPro-$version-macos-$arch.dmg}"

    # Sign, notarize and staple the app before it goes into the image: the stapled ticket
    # travels with the app, so Gatekeeper accepts it offline once copied to /Applications.
    "$HERE/sign_and_notarize.sh" "$app"

    # Global, not local: the EXIT trap runs after main has returned.
    STAGING="$(mktemp -d "${TMPDIR:-/tmp}/llamarunner-dmg.XXXXXX")"
    trap 'rm -rf "$STAGING"' EXIT
    # ditto keeps the bundle's symlinks, permissions and extended attributes intact.
    ditto "$app" "$STAGING/$(basename "$app")"
    ln -s /Applications "$STAGING/Applications"

    rm -f "$dmg"
    log "creating $dmg"
    hdiutil create -volname "$VOLUME_NAME" -srcfolder "$STAGING" -fs HFS+ \
        -format UDZO -imagekey zlib-level=9 -ov "$dmg"
    hdiutil verify "$dmg"

    "$HERE/sign_and_notarize.sh" "$dmg"
    log "ready: $dmg"
}

main "$@"
