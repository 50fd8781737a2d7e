#!/usr/bin/env bash
# Sign LlamaRunner Pro for distribution outside the App Store, notarize it, staple it.
#
#   installer/macos/sign_and_notarize.sh "dist/LlamaRunner Pro.app"
#   installer/macos/sign_and_notarize.sh dist/LlamaRunnerPro-0.1.0-macos-arm64.dmg
#
# An .app is signed inside out: every Mach-O file in it (Python extension modules, dylibs,
# Qt frameworks' binaries, the bundled llama-server), then every nested bundle, deepest
# first, then the app itself; all with the hardened runtime and a secure timestamp. Only
# the app's main executable carries entitlements.plist: Apple applies entitlements to
# executables alone (libraries inherit their host's), and llama-server needs no exception.
#
# Environment:
#   MACOS_SIGN_IDENTITY     e.g. "Developer ID Application: Example Ltd (TEAMID1234)".
#                           Unset or empty: nothing is signed and the script says so and
#                           exits 0, so unsigned builds still produce artifacts.
#   MACOS_REQUIRE_SIGNING=1 fail instead when no identity is configured.
#   MACOS_ENTITLEMENTS      entitlements file (default: entitlements.plist beside this).
#   Notarization credentials, the first complete set wins; none: signed, not notarized.
#     MACOS_NOTARY_PROFILE                  a `xcrun notarytool store-credentials` profile
#     MACOS_NOTARY_KEY, MACOS_NOTARY_KEY_ID, MACOS_NOTARY_ISSUER
#                                           App Store Connect API key (.p8 path, ids)
#     MACOS_NOTARY_APPLE_ID, MACOS_NOTARY_TEAM_ID, MACOS_NOTARY_PASSWORD
#                                           Apple ID and an app-specific password
#
# Written for the bash 3.2 that macOS ships: no mapfile, no associative arrays.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENTITLEMENTS="${MACOS_ENTITLEMENTS:-$HERE/entitlements.plist}"
IDENTITY="${MACOS_SIGN_IDENTITY:-}"

log() { printf '%s\n' "sign_and_notarize: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    printf 'usage: %s PATH.app|PATH.dmg\n' "$(basename "$0")" >&2
    exit 2
}

# Mach-O by its magic number (thin 32/64-bit either byte order, or universal). Universal
# shares 0xcafebabe with Java class files, which a bundle of ours does not contain.
is_macho() {
    local magic
    magic="$(LC_ALL=C od -An -tx1 -N4 -- "$1" 2>/dev/null | tr -d ' \n')" || return 1
    case "$magic" in
        cffaedfe | cefaedfe | feedfacf | feedface | cafebabe | bebafeca) return 0 ;;
        *) return 1 ;;
    esac
}

# Slashes in a path: sorting on it puts a bundle's contents before the bundle.
depth() {
    local slashes="${1//[!\/]/}"
    printf '%d' "${#slashes}"
}

sign() {
    # sign PATH [--entitlements FILE]
    local path="$1"
    shift
    log "signing ${path#"$ROOT_PARENT"/}"
    codesign --force --options runtime --timestamp --sign "$IDENTITY" "$@" "$path"
}

# Fill NOTARY_ARGS from the environment; false when no complete set of credentials.
NOTARY_ARGS=()
notary_credentials() {
    if [[ -n "${MACOS_NOTARY_PROFILE:-}" ]]; then
        NOTARY_ARGS=(--keychain-profile "$MACOS_NOTARY_PROFILE")
    elif [[ -n "${MACOS_NOTARY_KEY:-}" && -n "${MACOS_NOTARY_KEY_ID:-}" \
        && -n "${MACOS_NOTARY_ISSUER:-}" ]]; then
        NOTARY_ARGS=(--key "$MACOS_NOTARY_KEY" --key-id "$MACOS_NOTARY_KEY_ID"
            --issuer "$MACOS_NOTARY_ISSUER")
    elif [[ -n "${MACOS_NOTARY_APPLE_ID:-}" && -n "${MACOS_NOTARY_TEAM_ID:-}" \
        && -n "${MACOS_NOTARY_PASSWORD:-}" ]]; then
        NOTARY_ARGS=(--apple-id "$MACOS_NOTARY_APPLE_ID" --team-id "$MACOS_NOTARY_TEAM_ID"
            --password "$MACOS_NOTARY_PASSWORD")
    else
        return 1
    fi
}

# notarize FILE (a .zip of the app, or the .dmg); waits for Apple's verdict.
notarize() {
    local upload="$1" result status id
    result="$WORK/notary-result.plist"
    log "submitting $(basename "$upload") for notarization (this waits for the verdict)"
    if ! xcrun notarytool submit "$upload" "${NOTARY_ARGS[@]}" --wait \
        --output-format plist >"$result"; then
        log "notarytool submit failed"
    fi
    status="$(plutil -extract status raw -o - "$result" 2>/dev/null || true)"
    if [[ "$status" != "Accepted" ]]; then
        id="$(plutil -extract id raw -o - "$result" 2>/dev/null || true)"
        if [[ -n "$id" ]]; then
            log "Apple's log for submission $id:"
            xcrun notarytool log "$id" "${NOTARY_ARGS[@]}" >&2 || true
        fi
        die "notarization of $(basename "$upload") ended with status '${status:-unknown}'"
    fi
    log "notarization accepted"
}

sign_app() {
    local app="$1" path entry
    [[ -f "$app/Contents/Info.plist" ]] || die "$app is not an app bundle (no Contents/Info.plist)"
    [[ -f "$ENTITLEMENTS" ]] || die "entitlements file $ENTITLEMENTS is missing"

    # Everything to sign inside the app, "depth<TAB>path" per NUL-terminated record:
    # regular Mach-O files (symlinks are covered by their targets) and nested bundles.
    local list="$WORK/to-sign"
    : >"$list"
    while IFS= read -r -d '' path; do
        if is_macho "$path"; then
            printf '%s\t%s\0' "$(depth "$path")" "$path" >>"$list"
        fi
    done < <(find "$app/Contents" -type f -print0)
    while IFS= read -r -d '' path; do
        printf '%s\t%s\0' "$(depth "$path")" "$path" >>"$list"
    done < <(find "$app/Contents" -type d \( -name '*.framework' -o -name '*.app' \
        -o -name '*.appex' -o -name '*.xpc' -o -name '*.bundle' -o -name '*.plugin' \) -print0)

    local count=0
    while IFS= read -r -d '' entry; do
        sign "${entry#*$'\t'}"
        count=$((count + 1))
    done < <(sort -z -t $'\t' -k1,1nr -k2 "$list")
    log "signed $count nested item(s); now the app with $(basename "$ENTITLEMENTS")"
    sign "$app" --entitlements "$ENTITLEMENTS"

    codesign --verify --deep --strict --verbose=2 "$app"
    log "signature verified: $app"

    if notary_credentials; then
        # notarytool takes a zip, dmg or pkg; ditto keeps symlinks and extended attributes.
        local zip
        zip="$WORK/$(basename "$app" .app).zip"
        ditto -c -k --sequesterRsrc --keepParent "$app" "$zip"
        notarize "$zip"
        xcrun stapler staple "$app"
        xcrun stapler validate "$app"
        spctl --assess --type execute --verbose=4 "$app"
        log "notarized, stapled and accepted by Gatekeeper: $app"
    else
        log "no notarization credentials (MACOS_NOTARY_*): the app is signed but not" \
            "notarized, so Gatekeeper will warn on other Macs"
    fi
}

sign_dmg() {
    local dmg="$1"
    # A disk image is not code: no hardened runtime, no entitlements, just a signature.
    log "signing $(basename "$dmg")"
    codesign --force --timestamp --sign "$IDENTITY" "$dmg"
    codesign --verify --strict --verbose=2 "$dmg"
    if notary_credentials; then
        notarize "$dmg"
        xcrun stapler staple "$dmg"
        xcrun stapler validate "$dmg"
        spctl --assess --type open --context context:primary-signature --verbose=4 "$dmg"
        log "notarized and stapled: $dmg"
    else
        log "no notarization credentials (MACOS_NOTARY_*): the image is signed but not notarized"
    fi
}

main() {
    [[ $# -eq 1 ]] || usage
    local target="${1%/}"
    [[ -e "$target" ]] || die "$target does not exist"

    if [[ -z "$IDENTITY" ]]; then
        if [[ "${MACOS_REQUIRE_SIGNING:-0}" == "1" ]]; then
            die "MACOS_REQUIRE_SIGNING=1 but MACOS_SIGN_IDENTITY is not set"
        fi
        log "MACOS_SIGN_IDENTITY is not set: leaving $(basename "$target") unsigned" \
            "(set it to a Developer ID Application identity to sign and notarize)"
        return 0
    fi

    WORK="$(mktemp -d "${TMPDIR:-/tmp}/llamarunner-sign.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
    ROOT_PARENT="$(cd "$(dirname "$target")" && pwd)"
    target="$ROOT_PARENT/$(basename "$target")"

    case "$target" in
        *.app) sign_app "$target" ;;
        *.dmg) sign_dmg "$target" ;;
        *) usage ;;
    esac
}

main "$@"
