#!/usr/bin/env bash
# The main job: build vbuild and build examples/basic with it, twice, to
# show a cold run and a fully cached one.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p vbuild
vbuild="$PWD/target/release/vbuild"
cd examples/basic
echo "== cold (or cached, if you ran it before) build"
"$vbuild" run //...
echo "== again: every action is a cache hit"
"$vbuild" run //...
echo "== the app it built:"
./app/dist/hello
