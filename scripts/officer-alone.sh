#!/bin/sh
# The officer side (the receiver and the desk) builds on a machine without the box's media
# stack: nothing of GStreamer, ONNX Runtime, gpiocdev or evdev in its dependency tree, and a
# build from scratch with pkg-config unavailable (every GStreamer -sys crate needs it)
# succeeds.
set -eu
cd "$(dirname "$0")/.."

for crate in alertclip-officer alertclip-desk; do
    tree=$(cargo tree --locked -p "$crate" -e normal,build --prefix none --format '{p}')
    found=$(echo "$tree" | grep -E '^(gstreamer|glib|gobject|gio|ort|gpiocdev|evdev)' | sort -u || true)
    if [ -n "$found" ]; then
        echo "officer-alone: $crate depends on the box's stack:" >&2
        echo "$found" >&2
        exit 1
    fi
    echo "officer-alone: $crate: $(echo "$tree" | sort -u | wc -l) crates, none of the box's media or input stack"
done

# A target directory of its own, so that nothing built for the box is reused.
PKG_CONFIG=/bin/false CARGO_TARGET_DIR=target/officer-alone \
    cargo build --locked -p alertclip-officer -p alertclip-desk --bins
echo "officer-alone: alertclip-receive and alertclip-desk built with pkg-config unavailable"
