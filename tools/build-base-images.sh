#!/bin/sh
# Build local stand-ins for the images the Dockerfile and docker-compose.yml
# start from (python:3.11-slim-bookworm, node:20-bookworm-slim,
# prom/prometheus), for machines that reach Debian's package mirror but no
# container registry. Each is a minimal Debian bookworm made by mmdebstrap
# with Debian's own packages, imported with `docker import`:
#
#   model-server-base/python:3.11   Python 3.11 with venv (and, like the official
#                                   slim image, without the full Perl)
#   model-server-base/node:18       Node.js and npm
#   model-server-base/prometheus    Prometheus and promtool
#
# Usage: tools/build-base-images.sh [MIRROR]   (default: the mirror apt uses here)
# The stand-ins trust this machine's CA bundle, so that pip and npm inside a
# build reach their registries through a proxy with its own authority; the
# project's own images add nothing of it.
set -eu
mirror=${1:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}
bundle=/etc/ssl/certs/ca-certificates.crt
if ! command -v mmdebstrap >/dev/null; then
    echo "mmdebstrap missing: installing Debian's package"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

trust="ENV SSL_CERT_FILE=$bundle PIP_CERT=$bundle REQUESTS_CA_BUNDLE=$bundle NODE_EXTRA_CA_CERTS=$bundle"

build() {  # build NAME PACKAGES HOOK CHANGES...
    name=$1 packages=$2 hook=$3
    shift 3
    if docker image inspect "$name" >/dev/null 2>&1; then
        echo "$name exists"
        return
    fi
    echo "building $name from Debian bookworm ($mirror): $packages"
    mmdebstrap --quiet --variant=minbase --include="$packages" \
        --customize-hook="copy-in $bundle /etc/ssl/certs" \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* \
            "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/locale/*' \
        --customize-hook="$hook" \
        bookworm "$tmp/rootfs.tar" "$mirror"
    set -- --change "$trust" "$@"
    docker import "$@" "$tmp/rootfs.tar" "$name" >/dev/null
    rm -f "$tmp/rootfs.tar"
    echo "built $name"
}

build model-server-base/python:3.11 \
    python3,python3-venv,python-is-python3,ca-certificates \
    'chroot "$1" dpkg --purge --force-depends perl libperl5.36 perl-modules-5.36' \
    --change 'CMD ["python3"]'
build model-server-base/node:18 \
    nodejs,npm,ca-certificates true \
    --change 'CMD ["node"]'
build model-server-base/prometheus \
    prometheus,ca-certificates 'mkdir -p "$1/prometheus" && chown 65534:65534 "$1/prometheus"' \
    --change 'USER nobody' --change 'WORKDIR /prometheus' \
    --change 'ENTRYPOINT ["/usr/bin/prometheus"]' \
    --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
