#!/usr/bin/env bash
# Installs the Debian packages the build needs when they are missing and we
# run as root: libcap-dev (python-prctl's headers), libseccomp-dev (the native
# core's seccomp filter), redis-server (the Redis store's tests and
# benchmarks start their own), and the venv module and
# Python headers when the interpreter lacks them (Debian's python3 does).
set -euo pipefail
PYTHON=${PYTHON:-python3}
missing=()
has_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
has_pkg libcap-dev || [ -e /usr/include/sys/capability.h ] || missing+=(libcap-dev)
has_pkg libseccomp-dev || [ -e /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
has_pkg redis-server || command -v redis-server >/dev/null || missing+=(redis-server)
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
"$PYTHON" -c "import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
    || missing+=(python3-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "installing ${missing[*]} with apt-get" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
