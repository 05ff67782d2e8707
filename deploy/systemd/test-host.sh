#!/bin/sh
# Builds the image tests/systemd runs the units in: Debian bookworm (debootstrap, minbase) with
# systemd as PID 1, imported into Docker as gfs-systemd-host:bookworm. No registry is needed,
# only Debian's mirror. Skipped when the image exists.
#
#   deploy/systemd/test-host.sh && GFS_SYSTEMD=1 cargo test -p gfs-bins --test systemd
#
# Needs root, debootstrap and Docker. Environment: GFS_SYSTEMD_IMAGE (the tag),
# DEBIAN_MIRROR (http://deb.debian.org/debian).
set -eu
image="${GFS_SYSTEMD_IMAGE:-gfs-systemd-host:bookworm}"
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image is there"
  exit 0
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps bookworm "$root" \
  "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
# A container gets no console: boot to the target the units want, and nothing else.
ln -sf /lib/systemd/system/multi-user.target "$root/etc/systemd/system/default.target"
tar -C "$root" -c . | docker import -c 'CMD ["/lib/systemd/systemd"]' - "$image" >/dev/null
echo "built $image"
