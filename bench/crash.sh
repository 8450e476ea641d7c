#!/bin/sh
# Crash test (issue 11): kill -9 at random moments of cold builds and
# restores, then check the store (`vbuild store verify`), the workspace (no
# stray or temp file) and that the next run is correct. Prints the figures.
#   bench/crash.sh [ROUNDS] [SANDBOX]      defaults: 200 scratch
# Replay a run with VBUILD_CRASH_SEED=<seed printed at the start>.
set -eu
cd "$(dirname "$0")/.."
VBUILD_CRASH_ROUNDS="${1:-200}" VBUILD_CRASH_SANDBOX="${2:-scratch}" \
  exec cargo test --locked -p vbuild --test crash -- --ignored --nocapture kill_9_during_builds_and_restores_full
