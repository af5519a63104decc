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

# `--bench` adds what the benchmark compares against. Not for a store box: Motion installs a
# service of its own.
if [ "${1:-}" = "--bench" ]; then
    PACKAGES="$PACKAGES motion"
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
