#!/usr/bin/env bash
# A local Label Studio for SAM2Plus (1.23.2 unless told otherwise): installed into its own venv
# per version from its lock, served on loopback with SQLite. Used by hand and by the end-to-end
# tests (tests/e2e).
#
#   scripts/label-studio.sh [install|start|describe] [options]
#
#   install    only create/refresh the venv, then exit
#   start      (default) install if needed, then run Label Studio in the foreground
#   describe   which lock the venv was built from, whether it still matches, and `pip check`
#
# The venv holds exactly requirements/label-studio-VERSION.lock (written by
# `.venv/bin/python scripts/lock.py --label-studio`; docs/tests.md: The lock): installed with
# --no-deps --require-hashes, then `pip check`. It is reused only while it was built from that
# very lock (its sha256 in the venv's marker) and holds exactly its pins; otherwise it is rebuilt
# (scripts/locked_venv.py). A release without a lock is refused.
#
# Options (environment variable in brackets):
#   --version VERSION   the label-studio release to install and run [SAM2PLUS_LS_VERSION, 1.23.2];
#                       SAM2Plus supports 1.12.1 and newer (README.md, Connecting Label Studio);
#                       locked here: LOCKED_VERSIONS
#   --venv DIR          venv location [SAM2PLUS_LS_VENV, CACHE/label-studio-VERSION-LOCKHASH,
#                       LOCKHASH the first 12 hex digits of the lock's sha256 and CACHE
#                       SAM2PLUS_CACHE, default ~/.cache/sam2plus: an empty folder there
#                       installs as a fresh machine would]
#   --data-dir DIR      SQLite database, uploads, media [SAM2PLUS_LS_DATA_DIR,
#                       ~/.local/share/sam2plus/label-studio]
#   --host ADDR         address to bind [SAM2PLUS_LS_HOST, 127.0.0.1]
#   --port PORT         [SAM2PLUS_LS_PORT, 8080]
#   --username EMAIL    user created at start [SAM2PLUS_LS_USERNAME, admin@example.com]
#   --password PASS     [SAM2PLUS_LS_PASSWORD, sam2plus-admin]
#   --token TOKEN       the user's legacy API token, > 5 chars [SAM2PLUS_LS_TOKEN,
#                       sam2plus-local-token]. User and token are created with the data dir;
#                       a later start with another token does not change an existing user's
#   --no-legacy-token   do not enable legacy API tokens (only personal access tokens work);
#                       takes effect when the data dir is new (the organization is created).
#                       Label Studio 1.18 and newer; before 1.18 legacy tokens are always on
#   --block-local-ip    keep Label Studio's default refusal to call ML backends on loopback
#                       and private addresses (by default this script lifts it, since
#                       SAM2Plus usually runs on the same host or a docker bridge)
#
# Label Studio then answers on http://HOST:PORT with the user above; connect SAM2Plus with
# LABEL_STUDIO_URL=http://HOST:PORT and LABEL_STUDIO_API_KEY=TOKEN (or a personal access
# token from Account & Settings). Stop it with Ctrl-C.
set -euo pipefail

cmd=start
case "${1:-}" in
    install|start|describe) cmd=$1; shift ;;
esac

version=${SAM2PLUS_LS_VERSION:-1.23.2}
venv=${SAM2PLUS_LS_VENV:-}
data_dir=${SAM2PLUS_LS_DATA_DIR:-$HOME/.local/share/sam2plus/label-studio}
host=${SAM2PLUS_LS_HOST:-127.0.0.1}
port=${SAM2PLUS_LS_PORT:-8080}
username=${SAM2PLUS_LS_USERNAME:-admin@example.com}
password=${SAM2PLUS_LS_PASSWORD:-sam2plus-admin}
token=${SAM2PLUS_LS_TOKEN:-sam2plus-local-token}
legacy=1
block_local=0
python=${SAM2PLUS_LS_PYTHON:-python3}

repo=$(cd "$(dirname "$0")/.." && pwd)
locked_versions() { (cd "$repo/requirements" && ls label-studio-*.lock 2>/dev/null) | sed 's/^label-studio-//; s/\.lock$//' | sort -V | xargs; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' | sed "s/LOCKED_VERSIONS/$(locked_versions)/"; }
need() { [[ $# -ge 2 && -n $2 ]] || { echo "label-studio.sh: $1 needs a value" >&2; exit 2; }; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --version) need "$@"; version=$2; shift 2 ;;
        --venv) need "$@"; venv=$2; shift 2 ;;
        --data-dir) need "$@"; data_dir=$2; shift 2 ;;
        --host) need "$@"; host=$2; shift 2 ;;
        --port) need "$@"; port=$2; shift 2 ;;
        --username) need "$@"; username=$2; shift 2 ;;
        --password) need "$@"; password=$2; shift 2 ;;
        --token) need "$@"; token=$2; shift 2 ;;
        --no-legacy-token) legacy=0; shift ;;
        --block-local-ip) block_local=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "label-studio.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if ! [[ $version =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?(\.post[0-9]+)?$ ]]; then
    echo "label-studio.sh: --version must be a release number such as 1.23.2 (got ${version@Q})" >&2
    exit 2
fi
lock=$repo/requirements/label-studio-$version.lock
if [[ ! -f $lock ]]; then
    echo "label-studio.sh: no lock for Label Studio $version (locked: $(locked_versions)); make one with" \
         "\`.venv/bin/python scripts/lock.py --label-studio $version\` after adding it to LABEL_STUDIO_PINS" >&2
    exit 2
fi
cache=${SAM2PLUS_CACHE:-$HOME/.cache/sam2plus}
# Named by the lock's content too: a changed lock gets a venv of its own (checkouts of other
# branches keep theirs), and the marker inside says the same.
venv=${venv:-$cache/label-studio-$version-$(sha256sum "$lock" | cut -c1-12)}
# at_least V: the chosen version is V or newer.
at_least() { [[ $(printf '%s\n%s\n' "$1" "$version" | sort -V | head -n1) == "$1" ]]; }
if [[ $legacy == 0 ]] && ! at_least 1.18; then
    echo "label-studio.sh: --no-legacy-token needs Label Studio 1.18 or newer (got $version)" >&2
    exit 2
fi

if [[ ${#token} -le 5 ]]; then
    echo "label-studio.sh: --token must be longer than 5 characters (Label Studio ignores shorter ones)" >&2
    exit 2
fi

# scripts/locked_venv.py builds the venv from the lock, or reuses it when it was built from this
# very lock and still holds exactly its pins; concurrent installs (parallel test runs) wait for one.
install() {
    "$python" "$repo/scripts/locked_venv.py" ensure --lock "$lock" --venv "$venv" --python "$python" >&2
    "$venv/bin/python" -c "import importlib.metadata as m; v = m.version('label-studio'); assert v == '$version', v"
}

if [[ $cmd == describe ]]; then
    exec "$python" "$repo/scripts/locked_venv.py" describe --lock "$lock" --venv "$venv"
fi
install
[[ $cmd == install ]] && exit 0

mkdir -p "$data_dir"
export LABEL_STUDIO_BASE_DATA_DIR="$data_dir"
export LABEL_STUDIO_USERNAME="$username" LABEL_STUDIO_PASSWORD="$password" LABEL_STUDIO_USER_TOKEN="$token"
# SQLite is Label Studio's default database; say so in case the caller's environment differs.
export DJANGO_DB=sqlite
unset LABEL_STUDIO_HOST HOST
# No call to pypi.org for the latest version at start (10 s lost offline; older releases, 1.12 to
# 1.18 among them, make it regardless), no usage analytics.
export LATEST_VERSION_CHECK=${LATEST_VERSION_CHECK:-false} COLLECT_ANALYTICS=${COLLECT_ANALYTICS:-false}
if [[ $block_local == 0 ]]; then
    # ML_BLOCK_LOCAL_IP lets LS call a backend on 127.0.0.1 / a private address. Adding such a
    # backend also creates a webhook to it, which LS validates separately: without
    # SSRF_PROTECTION_ENABLED=false, POST /api/ml answers 403 "URL resolves to a reserved
    # network address" (webhooks and cloud storage URLs are then not SSRF-checked either).
    export ML_BLOCK_LOCAL_IP=false SSRF_PROTECTION_ENABLED=false
fi

# Label Studio silently moves to another port when PORT is taken: refuse instead, so that the
# URL printed here (and given to SAM2Plus) is the one it serves.
if ! "$venv/bin/python" -c 'import socket, sys; socket.create_server((sys.argv[1], int(sys.argv[2]))).close()' \
        "$host" "$port" 2>/dev/null; then
    echo "label-studio.sh: cannot listen on $host:$port (in use?); choose another --port" >&2
    exit 1
fi

# The URL Label Studio gives itself (sent to ML backends as `hostname`).
public=$host
[[ $host == 0.0.0.0 ]] && public=localhost
# User, password and token go by environment (above), not on the command line, where `ps` shows them.
args=(start --no-browser --internal-host "$host" --port "$port" --host "http://$public:$port"
      --data-dir "$data_dir")
# Before 1.18 there is no such flag: legacy tokens are always on (1.17 has personal access
# tokens too, off until enabled in the organization's settings).
[[ $legacy == 1 ]] && at_least 1.18 && args+=(--enable-legacy-api-token)

echo "label-studio.sh: Label Studio $version on http://$public:$port (data: $data_dir, user: $username," \
     "legacy token: $([[ $legacy == 1 ]] && echo "$token" || echo disabled))" >&2
exec "$venv/bin/label-studio" "${args[@]}"
