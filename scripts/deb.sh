#!/bin/sh
# Builds the Debian package with cargo-deb, for this machine's architecture or for arm64
# (64-bit Raspberry Pi OS, cross-built with scripts/aarch64.sh):
#
#   scripts/deb.sh [amd64|arm64]   ->  target/debian/alertclip_<version>-1_<arch>.deb
#   scripts/deb.sh amd64 --dev     ->  the same with the unoptimised (dev profile) binary the
#                                      tests built: for testing the packaging (CI), not for boxes
#   scripts/deb.sh desk [--dev]    ->  target/debian/alertclip-desk_<version>-1_<arch>.deb, the
#                                      precinct's desk, for this machine's architecture
#
# The package holds the binary, the systemd unit, the example configuration, the docs, the
# model with its card and license, and ONNX Runtime for the architecture (from the pinned
# PyPI wheel). Its maintainer scripts (cross/debian/) create the service user and enable the
# service; removing keeps the configuration, clips, outbox and device key, purging deletes them.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
arch=${1:-$(dpkg --print-architecture)}
profile=release
[ "${2:-}" = "--dev" ] && profile=dev

if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "deb.sh: installing cargo-deb from crates.io"
    cargo install --locked cargo-deb@3.8.0
fi

# The desk: no model, no runtime, nothing staged.
if [ "$arch" = "desk" ]; then
    cd "$here"
    cargo deb --locked -p alertclip-desk --profile "$profile"
    exit 0
fi
case "$arch" in
    amd64) ort_arch=x86_64 ;;
    arm64) ort_arch=aarch64 ;;
    *) echo "deb.sh: amd64, arm64 or desk, not $arch" >&2; exit 2 ;;
esac

"$here/models/fetch.sh" --arch "$ort_arch"
stage=$here/target/deb-stage
rm -rf "$stage" && mkdir -p "$stage"
cp "$here/models/onnxruntime/$ort_arch/libonnxruntime.so.1.31.1" "$stage/"
cp "$here/models/onnxruntime/$ort_arch/LICENSE" "$stage/LICENSE-onnxruntime"
cp "$here/models/onnxruntime/$ort_arch/ThirdPartyNotices.txt" "$stage/ThirdPartyNotices-onnxruntime.txt"

cd "$here"
if [ "$arch" = "$(dpkg --print-architecture)" ]; then
    # cargo-deb warns that dev builds are not for release: --dev is for testing the packaging.
    cargo deb --locked --profile "$profile"
else
    "$here/scripts/aarch64.sh" --build
    cargo deb --locked --no-build --no-strip --target aarch64-unknown-linux-gnu --variant arm64-cross
fi
