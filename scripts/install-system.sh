#!/usr/bin/env bash
# Debian packages the tests run for real, installed with apt when their command is missing:
#   haproxy      the buffering front of the compose deployments (haproxy/, docs/security.md: Slow clients and the front)
#                and the replicas' balancer (haproxy/replicas.cfg, docs/scaling-out.md)
#   postgresql   the replicas' shared settings store (SETTINGS_URL; tests/deploy/test_replicas.py runs
#                Debian 12's PostgreSQL 15 from /usr/lib/postgresql/15/bin, off the PATH)
# Add a package as one more "command:package" entry of NEEDED (an absolute path for a command off the PATH).
#
# Needs root (as CI runs) or password-less sudo to install; otherwise it names the packages to
# install and exits 1. Safe to re-run: nothing is done when every command is there.
set -euo pipefail

NEEDED=("haproxy:haproxy" "/usr/lib/postgresql/15/bin/pg_ctl:postgresql")

missing=()
for entry in "${NEEDED[@]}"; do
    command -v "${entry%%:*}" >/dev/null || PATH="$PATH:/usr/sbin:/sbin" command -v "${entry%%:*}" >/dev/null \
        || missing+=("${entry#*:}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

. "$(dirname "$0")/apt.sh"
need_root install-system.sh "missing ${missing[*]}, and no root to install them: run \`sudo apt-get install ${missing[*]}\` (Debian 12)"
apt_install install-system.sh "${missing[@]}"
