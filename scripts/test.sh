#!/usr/bin/env bash
# Runs every test of the workspace: unit tests and end-to-end tests that
# drive the real vbuild binary on temporary workspaces.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
