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

. "$(dirname "$0")/apt.sh"
need_root install-chromium.sh "no chromium, and no root to install it: run \`sudo apt-get install chromium\` (Debian), or set SAM2PLUS_CHROMIUM to a Chromium executable"
apt_install install-chromium.sh chromium
chromium --version >&2
