#!/usr/bin/env bash
# Wall time of examples/vite-monorepo under vbuild (cold, all hits, restore
# after deleting every dist/) next to `pnpm -r build`, on a temporary copy.
#
#   bash bench/vite_example.sh [RUNS]      (default 3 runs of each; median)
#
# Needs: cargo, pnpm, and `pnpm install --frozen-lockfile` in the example.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
cargo build --release --locked -p vbuild >/dev/null 2>&1
vbuild="$PWD/target/release/vbuild"
src="$PWD/examples/vite-monorepo"
[ -d "$src/node_modules/.pnpm" ] || { echo "run pnpm install --frozen-lockfile in $src first" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -a "$src/." "$work/ws"
cd "$work/ws"
rm -rf packages/*/dist apps/*/dist vbuild.toml packages/*/BUILD.toml apps/*/BUILD.toml
"$vbuild" migrate >/dev/null
export VBUILD_CACHE_DIR="$work/cache"
builds=(//packages/core:build //packages/format:build //packages/ui:build //apps/web:build)

ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
clean_dist() { rm -rf packages/*/dist apps/*/dist; }

cold=(); hit=(); restore=(); pnpm_t=()
for _ in $(seq "$runs"); do
  rm -rf "$VBUILD_CACHE_DIR"; clean_dist
  cold+=("$(ms "$vbuild" run "${builds[@]}")")
  hit+=("$(ms "$vbuild" run "${builds[@]}")")
  clean_dist
  restore+=("$(ms "$vbuild" run "${builds[@]}")")
  clean_dist
  pnpm_t+=("$(ms pnpm -r build)")
done
echo "examples/vite-monorepo, 4 build targets (tsc, 2x vite lib, vite app), median of $runs, $(nproc) cores"
printf '%-34s %6s ms\n' "pnpm -r build" "$(printf '%s\n' "${pnpm_t[@]}" | median)"
printf '%-34s %6s ms\n' "vbuild run (cold, empty store)" "$(printf '%s\n' "${cold[@]}" | median)"
printf '%-34s %6s ms\n' "vbuild run (all hits)" "$(printf '%s\n' "${hit[@]}" | median)"
printf '%-34s %6s ms\n' "vbuild run (restore every dist/)" "$(printf '%s\n' "${restore[@]}" | median)"
