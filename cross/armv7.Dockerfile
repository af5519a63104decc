# The build image `cross` uses for armv7-unknown-linux-gnueabihf (see Cross.toml):
# Debian bookworm, as on Raspberry Pi OS, with the cross compiler and the target's GStreamer
# development packages from Debian multiarch. The Rust toolchain comes from the host.
FROM debian:bookworm

RUN dpkg --add-architecture armhf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates pkg-config gcc-arm-linux-gnueabihf libc6-dev-armhf-cross \
        libgstreamer1.0-dev:armhf libgstreamer-plugins-base1.0-dev:armhf \
        libgstrtspserver-1.0-dev:armhf \
    && rm -rf /var/lib/apt/lists/*

ENV CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc \
    CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc \
    AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar \
    PKG_CONFIG_ALLOW_CROSS=1 \
    PKG_CONFIG_LIBDIR=/usr/lib/arm-linux-gnueabihf/pkgconfig:/usr/share/pkgconfig
