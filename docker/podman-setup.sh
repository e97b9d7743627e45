#!/usr/bin/env bash
# Makes Debian's podman usable for building and running spoolsoap's images on a
# machine without Docker (CI and development boxes). Idempotent: a second run
# only checks. Needs root (apt-get, debootstrap).
#
#   bash docker/podman-setup.sh            # installs, configures, prints the exports
#   source "$(bash docker/podman-setup.sh --env-file)"   # same, then loads them
#
# What it does, and why:
#   - installs podman, buildah, runc, CNI plugins, slirp4netns, uidmap and
#     debootstrap from Debian;
#   - writes containers.conf (runtime runc: crun fails on hybrid cgroups; explicit
#     ulimits: podman's defaults are refused) and storage.conf (graphroot and
#     runroot in a scratch directory) into $SPOOLSOAP_PODMAN_DIR
#     (default /var/tmp/spoolsoap-podman), plus env.sh exporting
#     CONTAINERS_CONF and CONTAINERS_STORAGE_CONF;
#   - no image registry is reachable here, so it builds a bare Debian bookworm
#     base image `localbase` with debootstrap (once); build with
#     `--build-arg BASE=localbase`.
set -euo pipefail

DIR="${SPOOLSOAP_PODMAN_DIR:-/var/tmp/spoolsoap-podman}"
BASE_IMAGE="${SPOOLSOAP_BASE_IMAGE:-localbase}"
SUITE=bookworm
MIRROR="${DEBOOTSTRAP_MIRROR:-http://deb.debian.org/debian}"
print_env_file=false
[ "${1:-}" = "--env-file" ] && print_env_file=true

say() { echo "podman-setup: $*" >&2; }

# 1. packages -----------------------------------------------------------------
need=()
for pair in podman:podman buildah:buildah runc:runc slirp4netns:slirp4netns \
            newuidmap:uidmap debootstrap:debootstrap; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends podman buildah runc \
        containernetworking-plugins slirp4netns uidmap debootstrap >/dev/null
fi

# 2. configuration ------------------------------------------------------------
mkdir -p "$DIR/storage" "$DIR/run"
write_if_changed() {  # path, content: rewrite only when different (keeps mtimes stable)
    local path="$1" content="$2"
    if [ ! -f "$path" ] || [ "$(cat "$path")" != "$content" ]; then
        printf '%s\n' "$content" >"$path.tmp" && mv "$path.tmp" "$path"
    fi
}
write_if_changed "$DIR/containers.conf" '# written by spoolsoap docker/podman-setup.sh
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'
write_if_changed "$DIR/storage.conf" "# written by spoolsoap docker/podman-setup.sh
[storage]
driver = \"overlay\"
graphroot = \"$DIR/storage\"
runroot = \"$DIR/run\""
write_if_changed "$DIR/env.sh" "export CONTAINERS_CONF=$DIR/containers.conf
export CONTAINERS_STORAGE_CONF=$DIR/storage.conf"
# shellcheck source=/dev/null
source "$DIR/env.sh"

podman info >/dev/null 2>"$DIR/podman-info.err" || {
    cat "$DIR/podman-info.err" >&2
    say "podman does not work with $DIR/containers.conf"
    exit 1
}

# 3. base image ---------------------------------------------------------------
if ! podman image exists "$BASE_IMAGE"; then
    rootfs="$DIR/rootfs-$SUITE"
    rm -rf "$rootfs"
    say "building base image $BASE_IMAGE: debootstrap --variant=minbase $SUITE (about a minute)"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 || {
        tail -20 "$DIR/debootstrap.log" >&2
        say "debootstrap failed (log: $DIR/debootstrap.log)"
        exit 1
    }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    say "base image $BASE_IMAGE imported"
fi

if $print_env_file; then
    echo "$DIR/env.sh"
else
    cat "$DIR/env.sh"
fi
