#!/usr/bin/env bash
# What tests/deploy/test_image.py builds and runs images with: podman (as root), runc, mmdebstrap
# and uidmap from Debian, installed with apt when missing; the two settings this kind of machine
# needs (docs/tests.md: The image); and the image's base, `debian:bookworm-slim`, made from the
# Debian mirror with mmdebstrap and imported into podman when podman does not have it yet (about
# 40 s). The base is imported once per machine, so later builds reuse podman's layer cache.
#
#   SAM2PLUS_BASE_SUITE   the Debian suite of the base (default: bookworm, matching the tag)
#
# Needs root (as CI runs) or password-less sudo; otherwise it says what to do and exits 1. Safe to re-run.
set -euo pipefail
BASE=docker.io/library/debian:bookworm-slim
SUITE=${SAM2PLUS_BASE_SUITE:-bookworm}

. "$(dirname "$0")/apt.sh"
need_root install-containers.sh "needs root (podman runs the image tests as root): run it with sudo"

missing=()
for tool in podman runc mmdebstrap newuidmap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    apt_install install-containers.sh podman runc mmdebstrap uidmap
fi

# Containers may not set rlimits on this kind of machine: podman's default ulimits must go.
conf=/etc/containers/containers.conf
if ! grep -qs '^default_ulimits = \[\]' "$conf"; then
    echo "install-containers.sh: writing [containers] default_ulimits = [] to $conf" >&2
    "${sudo[@]}" mkdir -p /etc/containers
    if grep -qs '^\[containers\]' "$conf"; then
        "${sudo[@]}" sed -i 's/^\[containers\]$/[containers]\ndefault_ulimits = []/' "$conf"
    else
        printf '[containers]\ndefault_ulimits = []\n' | "${sudo[@]}" tee -a "$conf" >/dev/null
    fi
fi

podman=("${sudo[@]}" podman --runtime runc --cgroup-manager cgroupfs)
if ! "${podman[@]}" image exists "$BASE"; then
    echo "install-containers.sh: making $BASE with mmdebstrap (about 40 s)" >&2
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "${sudo[@]}" mmdebstrap --quiet --variant=minbase --include=ca-certificates "$SUITE" "$work/rootfs.tar"
    "${podman[@]}" import --quiet --change 'CMD ["bash"]' "$work/rootfs.tar" "$BASE" >/dev/null
fi
"${podman[@]}" --version >&2
