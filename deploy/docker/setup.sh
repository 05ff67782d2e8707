#!/bin/sh
# Everything the compose cluster needs, made once (run again: makes only what is missing):
# the image (image.sh), the cluster's CA and certificates in ./certs, and the data directories
# ./data/<name>, owned by the user the containers run as.
#
#   deploy/docker/setup.sh && (cd deploy/docker && docker compose up -d)
#
# As root, the containers run as uid/gid 10001 (GFS_UID/GFS_GID) and ./certs and ./data are
# given to it; as another user, they run as that user (written to ./.env), so no sudo is needed.
#
# `setup.sh DIR` makes them in DIR instead, with a copy of docker-compose.yml (a second
# cluster beside this one: give it its own GFS_NET and COMPOSE_PROJECT_NAME).
# GFS_IMAGE_READY=1 skips building the image.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
[ "${GFS_IMAGE_READY:-0}" = 1 ] || "$here/image.sh"
host="$(rustc -vV | sed -n 's/^host: //p')"
bin="$(cd "$here/../.." && pwd)/target/$host/release"
net="${GFS_NET:-172.28.0}"
project="${COMPOSE_PROJECT_NAME:-gfs}"
dest="${1:-$here}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
# A copy of the compose file, once: later runs keep what the operator added to it (a cs6).
[ "$dest" = "$here" ] || [ -f "$dest/docker-compose.yml" ] || cp "$here/docker-compose.yml" "$dest/"
cd "$dest"
issue() { # role name address
  [ -f "certs/$2.pem" ] && return 0
  "$bin/gfs-cluster" certs certs "$1" "$2" --host "$2" --host "$3" --host localhost \
    --host 127.0.0.1 >/dev/null
}
# Every service the compose file names (a chunkserver added to it gets its own on the next run),
# at the address it has there.
services="$(sed -n 's/^  \(master[0-9]*\|cs[0-9]*\):$/\1/p' docker-compose.yml)"
for svc in $services; do
  addr="$(sed -n "/^  $svc:\$/,/^\$/s/.*ipv4_address: .*}\.\([0-9]*\)\$/\1/p" docker-compose.yml)"
  case "$svc" in
    master*) issue master "$svc" "$net.$addr" ;;
    *) issue chunkserver "$svc" "$net.$addr" ;;
  esac
  mkdir -p "data/$svc"
done
issue client client 127.0.0.1
issue admin admin 127.0.0.1
if [ "$(id -u)" = 0 ]; then
  uid="${GFS_UID:-10001}" gid="${GFS_GID:-10001}"
  chown -R "$uid:$gid" data
  # The servers read their own certificate and key; the CA's key stays root's.
  chown "$uid:$gid" certs/*.pem certs/*.key
  chown root:root certs/ca.key
else
  uid="$(id -u)" gid="$(id -g)"
fi
printf 'COMPOSE_PROJECT_NAME=%s\nGFS_IMAGE=%s\nGFS_UID=%s\nGFS_GID=%s\nGFS_NET=%s\n' \
  "$project" "${GFS_IMAGE:-gfs-rs:local}" "$uid" "$gid" "$net" >.env
echo "ready: cd $dest && docker compose up -d   (docker-compose up -d with Compose v1)"
echo "then:  $bin/gfs --certs $dest/certs --master $net.11:9000,$net.12:9000,$net.13:9000 ls /"
