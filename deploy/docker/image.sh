#!/bin/sh
# Builds the gfs-rs image (deploy/docker/Dockerfile) from statically linked release binaries:
# glibc linked in (crt-static), so the image needs no base and no registry.
#
#   deploy/docker/image.sh            # gfs-rs:local; the binaries stay in target/<host>/release
#
# Environment: GFS_IMAGE (tag, gfs-rs:local), BASE_IMAGE (scratch), GFS_UID/GFS_GID (10001).
set -eu
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
. deploy/docker/static-env.sh
env "$static_env" \
  cargo build --release --locked --target "$host" \
  --bin gfs-master --bin gfs-chunkserver --bin gfs --bin gfs-cluster
out="target/$host/release"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/etc" "$stage/var"
for b in gfs-master gfs-chunkserver gfs gfs-cluster; do
  # A dynamic executable names the libraries it loads ("lib... => path").
  if ldd "$out/$b" 2>&1 | grep -q '=>'; then
    echo "error: $out/$b is dynamically linked" >&2
    exit 1
  fi
  # The image's copies without their debug information (a tenth of the size).
  objcopy --strip-debug "$out/$b" "$stage/bin/$b"
done
cp config/*.toml "$stage/etc/"
docker build -q -f deploy/docker/Dockerfile -t "${GFS_IMAGE:-gfs-rs:local}" \
  --build-arg "BASE_IMAGE=${BASE_IMAGE:-scratch}" \
  --build-arg "GFS_UID=${GFS_UID:-10001}" --build-arg "GFS_GID=${GFS_GID:-10001}" \
  "$stage" >/dev/null
echo "built ${GFS_IMAGE:-gfs-rs:local} from $out"
