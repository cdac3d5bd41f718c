#!/usr/bin/env bash
# The browser of tests/browser: Debian's `chromium` package, installed with apt when missing.
# Playwright (the `test` extra) drives it; Playwright's own browser download is not used.
#
#   SAM2PLUS_CHROMIUM   a Chromium executable to use instead (then nothing is installed)
#
# Needs root (as CI runs) or password-less sudo to install; otherwise it says what to do and
# exits 1. Safe to re-run.
set -euo pipefail

if [[ -n ${SAM2PLUS_CHROMIUM:-} ]]; then
    [[ -x $SAM2PLUS_CHROMIUM ]] && exit 0
    echo "install-chromium.sh: SAM2PLUS_CHROMIUM=$SAM2PLUS_CHROMIUM is not an executable" >&2
    exit 1
fi
command -v chromium >/dev/null && exit 0

if [[ $(id -u) -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "install-chromium.sh: no chromium, and no root to install it: run" \
         "\`sudo apt-get install chromium\` (Debian), or set SAM2PLUS_CHROMIUM to a Chromium executable" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "install-chromium.sh: no apt-get here: install Chromium and set SAM2PLUS_CHROMIUM to its executable" >&2
    exit 1
fi
echo "install-chromium.sh: installing Debian's chromium package (about 40 s)" >&2
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null
chromium --version >&2
