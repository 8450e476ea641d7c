#!/usr/bin/env bash
# Installs what the tests need (apt packages, npm fixtures, pnpm, BuildGrid)
# and runs every test of the workspace: unit tests and end-to-end tests that
# drive the real vbuild binary against real servers (nginx, BuildGrid),
# real Node tools and temporary workspaces.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "needs a Rust toolchain (cargo) on PATH" >&2; exit 1; }
source scripts/test-deps.sh
echo "--- cargo test"
cargo test --workspace --locked "$@"
