#!/usr/bin/env bash
# The PythonQt lane: the Slicer module's Qt tests inside the real PythonQt that Slicer embeds
# (../shared/tools/pythonqt/pythonqt-python, see its README). `make test` runs it after the main
# suite. It installs the host's Debian runtime packages when they are missing (as root, or through
# sudo), fails when a test fails, and skips (exit 0, one clear line) only when the host is absent.
# Extra arguments go to pytest, e.g. `Testing/SegDeep/pythonqt_lane.sh -k widget`.
# SEGDEEP_PYTHONQT_HOST: another host; SEGDEEP_PYTHONQT_NO_APT=1: never install packages.
set -euo pipefail
cd "$(dirname "$0")/../.."
HOST="${SEGDEEP_PYTHONQT_HOST:-../shared/tools/pythonqt/pythonqt-python}"
PACKAGES="libpython3.11 libqt5core5a libqt5gui5 libqt5widgets5 libqt5network5 libqt5printsupport5
libqt5multimedia5 libqt5multimediawidgets5"

if [ ! -x "$HOST" ]; then
    echo "PythonQt lane SKIPPED: no PythonQt host at $HOST; the Slicer module's Qt tests did not run" >&2
    exit 0
fi
if [ ! -x .venv/bin/python ]; then
    echo "PythonQt lane: .venv is missing; run 'make venv' first" >&2
    exit 2
fi
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "PythonQt lane: the host embeds Python 3.11 but .venv has $(.venv/bin/python -V);" \
         "rebuild it with 'make clean venv PYTHON=python3.11'" >&2
    exit 2
fi

if [ -z "${SEGDEEP_PYTHONQT_NO_APT:-}" ] && command -v dpkg-query >/dev/null 2>&1; then
    missing=""
    for package in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing="$missing $package"
    done
    if [ -n "$missing" ]; then
        echo "PythonQt lane: installing the host's runtime packages:$missing"
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then
            command -v sudo >/dev/null 2>&1 || {
                echo "PythonQt lane: as root, run: apt-get install -y --no-install-recommends$missing" >&2
                exit 2
            }
            sudo="sudo"
        fi
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
    fi
fi

runtime="$(mktemp -d)"  # Qt wants a private XDG_RUNTIME_DIR (0700)
trap 'rm -rf "$runtime"' EXIT
export VIRTUAL_ENV="$PWD/.venv" QT_QPA_PLATFORM=offscreen XDG_RUNTIME_DIR="$runtime" PYTHONUTF8=1
echo "PythonQt lane: $HOST Testing/SegDeep/pythonqt_pytest.py Testing/SegDeep"
"$HOST" Testing/SegDeep/pythonqt_pytest.py -q -p no:cacheprovider Testing/SegDeep "$@"
