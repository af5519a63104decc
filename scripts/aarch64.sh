#!/bin/sh
# Builds alertclip for 64-bit Raspberry Pi OS (aarch64-unknown-linux-gnu) on an x86_64 Debian 12
# machine, without Docker, and runs its tests under qemu-user. CI runs it as its own stage.
#
#   scripts/aarch64.sh [ARGS]     build, then test under qemu (ARGS go to cargo test)
#   scripts/aarch64.sh --build    build only (target/aarch64-unknown-linux-gnu/release/alertclip)
#
# The toolchain is Debian's own (rustc-web and cargo-web from bookworm-security, with the
# arm64 standard library as a Debian package), since rustup cannot add targets from the
# package registries a store or CI network reaches. GStreamer's arm64 runtime libraries come
# from Debian multiarch; the -dev packages that are not multiarch-safe are unpacked into a
# sysroot under target/ instead of installed, so the host's stay.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-}
sysroot=$here/target/aarch64-sysroot
target=aarch64-unknown-linux-gnu

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $sudo dpkg --add-architecture arm64
    $sudo apt-get update -q
fi
packages="rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu
libc6-dev-arm64-cross qemu-user pkg-config libgstreamer1.0-dev:arm64 liborc-0.4-dev:arm64
libgstreamer-plugins-base1.0-0:arm64 gstreamer1.0-plugins-base:arm64 gstreamer1.0-plugins-good:arm64
gstreamer1.0-plugins-bad:arm64 gstreamer1.0-libav:arm64 gstreamer1.0-plugins-ugly:arm64"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "aarch64: installing$missing"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends $missing
fi

# The packages that would replace the host's if installed for arm64 (the RTSP server library
# is not multiarch either): unpacked, not installed.
if [ ! -f "$sysroot/.done" ]; then
    rm -rf "$sysroot" && mkdir -p "$sysroot/debs"
    (cd "$sysroot/debs" && apt-get download -q libgstreamer-plugins-base1.0-dev:arm64 \
        libgstrtspserver-1.0-dev:arm64 libgstrtspserver-1.0-0:arm64)
    for deb in "$sysroot"/debs/*.deb; do dpkg -x "$deb" "$sysroot"; done
    touch "$sysroot/.done"
fi

libdir=$sysroot/usr/lib/aarch64-linux-gnu
# The -dev packages' lib*.so links point at libraries installed from the runtime packages.
for link in "$libdir"/*.so; do
    if [ ! -e "$link" ] && [ -e "/usr/lib/aarch64-linux-gnu/$(readlink "$link")" ]; then
        ln -sf "/usr/lib/aarch64-linux-gnu/$(readlink "$link")" "$link"
    fi
done
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-L $libdir -C link-arg=-Wl,-rpath-link,$libdir:/usr/lib/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_aarch64_unknown_linux_gnu=pkg-config
export PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu="/usr/lib/aarch64-linux-gnu/pkgconfig:$libdir/pkgconfig:/usr/share/pkgconfig"
# Else GStreamer runs the arm64 plugin scanner as a native binary. (QEMU_LD_PREFIX must stay
# unset: a mismatched loader and libc make threads spin forever.)
export GST_REGISTRY_FORK=no
export GST_REGISTRY=$here/target/aarch64-gst-registry.bin
unset QEMU_LD_PREFIX

cargo=/usr/bin/cargo
"$cargo" --version
binary=$here/target/$target/release/alertclip
if [ "$mode" = "--build" ]; then
    "$cargo" build --release --locked --target "$target"
    file "$binary"
    exit 0
fi

# The detector's tests load the aarch64 ONNX Runtime from the same pinned wheel.
"$here/models/fetch.sh" --test-images --arch aarch64
# The arm64 loader under qemu finds the unpacked libraries here; host programs skip them.
export LD_LIBRARY_PATH=$libdir
# Tests that start the alertclip binary start it through qemu too.
export ALERTCLIP_TEST_RUNNER=qemu-aarch64
# ONNX Runtime's aarch64 library reads the CPU from /proc/cpuinfo and crashes on an x86
# host's: as root, the tests run in a mount namespace of their own where /proc/cpuinfo is a
# Raspberry Pi 4's (four Cortex-A72 cores), so the detector's tests run on arm64 too.
# Elsewhere they say why they skip (tests/common/mod.rs).
cpuinfo=$here/target/aarch64-cpuinfo
: > "$cpuinfo"
for cpu in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' \
        "$cpu" >> "$cpuinfo"
done
run="unshare --mount --propagation private sh -c"
prelude="mount --bind '$cpuinfo' /proc/cpuinfo &&"
if [ "$(id -u)" -ne 0 ] || ! $run "$prelude grep -q 'CPU implementer' /proc/cpuinfo" 2> /dev/null; then
    run="sh -c"
    prelude=""
    echo "aarch64: cannot mount an ARM /proc/cpuinfo (needs root and mount namespaces):" \
        "the detector's tests skip under qemu"
fi
# The tests build the binary they start (with the dev-dependencies' features unified, so a
# separate `cargo build` first would compile most crates twice).
$run "$prelude exec \"\$0\" \"\$@\"" "$cargo" test --release --locked --target "$target" "$@"
file "$binary"
