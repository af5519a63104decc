# The build image `cross` uses for aarch64-unknown-linux-gnu (see Cross.toml):
# Debian bookworm, as on Raspberry Pi OS, with the cross compiler and the target's GStreamer
# development packages from Debian multiarch. The Rust toolchain comes from the host.
FROM debian:bookworm

RUN dpkg --add-architecture arm64 \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates pkg-config gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
        libgstreamer1.0-dev:arm64 libgstreamer-plugins-base1.0-dev:arm64 \
        libgstrtspserver-1.0-dev:arm64 \
    && rm -rf /var/lib/apt/lists/*

ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
    PKG_CONFIG_ALLOW_CROSS=1 \
    PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
