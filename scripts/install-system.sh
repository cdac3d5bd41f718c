#!/usr/bin/env bash
# Debian packages the tests run for real, installed with apt when their command is missing:
#   haproxy      the buffering front of the compose deployments (haproxy/, README: Security, Slow clients and the front)
#                and the replicas' balancer (haproxy/replicas.cfg, README: Scaling out)
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

if [[ $(id -u) -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "install-system.sh: missing ${missing[*]}, and no root to install them: run" \
         "\`sudo apt-get install ${missing[*]}\` (Debian 12)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "install-system.sh: no apt-get here: install ${missing[*]} (HAProxy 2.6 or later) yourself" >&2
    exit 1
fi
echo "install-system.sh: installing Debian's ${missing[*]}" >&2
# Another apt (a parallel install script) may hold the lock for a while: wait for it.
wait_lock=(-o DPkg::Lock::Timeout=600)
"${sudo[@]}" apt-get "${wait_lock[@]}" update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get "${wait_lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
