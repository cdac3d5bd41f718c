# Sourced by the install-*.sh scripts: one way to install Debian packages as root (as CI runs) or
# with password-less sudo. `need_root WHO HINT` sets the array `sudo` or says HINT and exits 1;
# `apt_install WHO PACKAGE...` installs with apt, waiting for another apt's lock.

need_root() {
    if [[ $(id -u) -eq 0 ]]; then
        sudo=()
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "$1: $2" >&2
        exit 1
    fi
}

apt_install() {
    local who=$1
    shift
    if ! command -v apt-get >/dev/null; then
        echo "$who: no apt-get here: install $* yourself" >&2
        exit 1
    fi
    echo "$who: installing Debian's $*" >&2
    local wait_lock=(-o DPkg::Lock::Timeout=600)  # a parallel install script may hold apt's lock
    "${sudo[@]}" apt-get "${wait_lock[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get "${wait_lock[@]}" install -y -qq "$@" >/dev/null
}
