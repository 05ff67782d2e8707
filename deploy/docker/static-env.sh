# Sourced by deploy/docker/image.sh and .ci/run: the environment of a release build for the
# host target named explicitly, glibc linked in (crt-static). With --target, build scripts and
# proc macros stay dynamic. CARGO_TARGET_<triple>_RUSTFLAGS replaces the workspace's
# build.rustflags (.cargo/config.toml), so it names `--cfg tokio_unstable` again: the simulator
# needs it to replay a seed (gfs-sim refuses to build without it), and the simulator and the
# image's binaries share this one build only while their flags are the same.
#
# Sets: host (the host's target triple), static_env (NAME=VALUE, for `env "$static_env" cargo ...`).
host="$(rustc -vV | sed -n 's/^host: //p')"
static_env="CARGO_TARGET_$(echo "$host" | tr 'a-z-' 'A-Z_')_RUSTFLAGS=-C target-feature=+crt-static --cfg tokio_unstable"
