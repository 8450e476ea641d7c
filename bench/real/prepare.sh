#!/usr/bin/env bash
# Prepares the corpus checkouts (bench/real/corpus.txt) for
# bench/real/time-corpus.sh: for each NAME (default: all), a fresh extract of
# the mirrored repository at REAL/NAME made a git repository of its own (so
# tracked files tell sources from outputs), then bench/real/check.sh on it:
# install, `vbuild migrate` on the never-built checkout, native build,
# `vbuild run TASK`, no-op reruns, restore, one edit, native build again.
# The files migrate wrote are committed; REAL/NAME.task holds the task and
# REAL/NAME.check the check's report. A checkout whose check passed is
# marked REAL/NAME.ok.
#
#   bench/real/prepare.sh [NAME...]
#
# Environment: REAL (default /work/tmp-migrate/real), MIRRORS (default
# /work/.mirror), VBUILD (default target/debug/vbuild of this checkout),
# PM_BIN (a directory with pnpm 9 and yarn 1, put first on PATH; see
# docs/real-world.md), VBUILD_CACHE_ROOT (stores, one per repo).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
REAL=${REAL:-/work/tmp-migrate/real}
MIRRORS=${MIRRORS:-/work/.mirror}
VBUILD=$(realpath "${VBUILD:-$repo/target/debug/vbuild}")
export VBUILD
[ -n "${PM_BIN:-}" ] && export PATH="$PM_BIN:$PATH"
export YARN_REGISTRY=${YARN_REGISTRY:-https://registry.npmjs.org}
cache_root=${VBUILD_CACHE_ROOT:-$REAL/.stores}
mkdir -p "$REAL" "$cache_root"
want=" $* "
status=0
while read -r name gh task sub; do
  case "$name" in ''|'#'*) continue ;; esac
  [ $# -eq 0 ] || [[ "$want" == *" $name "* ]] || continue
  mirror="$MIRRORS/${gh/\//+}/repo"
  dest="$REAL/$name"
  [ -d "$mirror" ] || { echo "$name: no mirror at $mirror (fetch github:$gh first)"; status=1; continue; }
  echo "== $name ($gh @ $(git --git-dir="$mirror" rev-parse --short HEAD), task $task)"
  rm -rf "$dest" "$dest.ok" && mkdir -p "$dest"
  if [ "$sub" = - ]; then
    git --git-dir="$mirror" archive HEAD | tar -x -C "$dest"
  else
    git --git-dir="$mirror" archive HEAD "$sub" | tar -x -C "$dest" --strip-components=1
  fi
  g() { git -C "$dest" -c user.name=bench -c user.email=bench@example.com -c core.hooksPath=/dev/null "$@"; }
  g init -q -b main && printf 'node_modules/\n' >> "$dest/.git/info/exclude"
  g add -A && g commit -q -m "$gh @ $(git --git-dir="$mirror" rev-parse HEAD)"
  echo "$task" > "$dest.task"
  rm -rf "$cache_root/$name"
  VBUILD_CACHE_DIR="$cache_root/$name" timeout 1800 bash "$here/check.sh" "$dest" --task "$task" > "$dest.check" 2>&1
  rc=$?
  # migrate's files are sources from now on; so is a lockfile the install rewrote.
  for f in pnpm-lock.yaml package-lock.json yarn.lock; do
    [ -e "$dest/$f" ] && g add -- "$f"
  done
  for f in vbuild.toml .vbuild $(g ls-files -o --exclude-standard | grep -E '(^|/)BUILD\.toml$'); do
    [ -e "$dest/$f" ] && g add -- "$f"
  done
  # Outputs a repository commits (epfromer: lib/ and tsbuildinfo files)
  # are untracked, so the timing can delete them for its cold runs.
  tracked_outs=$(cd "$dest" && python3 - <<'PY'
import glob, os, tomllib
for f in glob.glob("**/BUILD.toml", recursive=True):
    if "node_modules" in f:
        continue
    pkg = os.path.dirname(f)
    for t in tomllib.load(open(f, "rb")).get("target", {}).values():
        for o in t.get("outs", []) + t.get("optional_outs", []):
            if not any(c in o for c in "*?[{"):
                print(os.path.join(pkg, o.rstrip("/")))
PY
)
  for o in $tracked_outs; do g rm -r -q --cached --ignore-unmatch -- "$o" >/dev/null; done
  g rm -q --cached --ignore-unmatch -- '*.tsbuildinfo' >/dev/null
  g commit -q -m "vbuild migrate" || true
  grep -E '^(migrate|cold|identical|only_native|only_vbuild|noop_all_hits|restore|edit|native_after_migrate|result|FAIL)' "$dest.check" | sed 's/^/  /'
  if [ $rc = 0 ]; then touch "$dest.ok"; else status=1; fi
done < "$here/corpus.txt"
exit $status
