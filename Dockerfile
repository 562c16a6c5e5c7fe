# tp's image (tp/tp:<version>) for those who build with Docker: `docker build -t tp/tp:0.1.0 .`
#
# The contents are those of `npm run image` (image/README.md) by construction: the build stage runs tp's
# own image builder with --stage, which writes the image's root filesystem from this stage's Debian
# packages (node, iptables, libbpf1, busybox-static and their shared libraries) and this checkout's
# build; the final stage is that root filesystem and nothing else. tp's own CI cannot build this file (no
# base image can be pulled there); it builds the same image with `npm run image`.
FROM node:20-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      clang llvm libbpf-dev linux-libc-dev gcc libc6-dev binutils \
      iptables libbpf1 busybox-static \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci
COPY . .
RUN node build.mjs && node dist/image/main.js --stage /rootfs

FROM scratch
COPY --from=build /rootfs/ /
# The one directory not owned by root, whatever COPY does with owners.
COPY --from=build --chown=7777:7777 /rootfs/home/tp /home/tp
# As image/tp-image.ts configures it.
USER 7777:7777
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /
CMD ["tp-manager", "--help"]
LABEL org.opencontainers.image.title="tp" \
      org.opencontainers.image.description="tp-manager, tp-agent and tp-init; the container command picks one" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/tp-dev/tp"
