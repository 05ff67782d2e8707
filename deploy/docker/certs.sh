#!/bin/sh
# The compose cluster's CA and certificates, in ./certs next to this script (made once; run
# again to issue what is missing). Each certificate names its service's host name, the one the
# others reach it by on the compose network, and localhost for the published ports.
set -eu
cd "$(dirname "$0")"
issue() {
  [ -f "certs/$2.pem" ] && return 0
  cargo run --quiet --release --manifest-path ../../Cargo.toml --bin gfs-cluster -- \
    certs certs "$1" "$2" --host "$3" --host localhost --host 127.0.0.1
}
issue master master master
for i in 1 2 3; do issue chunkserver "cs$i" "cs$i"; done
issue client client client
issue admin admin admin
