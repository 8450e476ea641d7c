#!/usr/bin/env bash
# Checks `vbuild migrate` + `vbuild run` on a checkout of a real monorepo
# (a scratch copy: the script builds in it, edits one file and reverts it).
#
#   bench/real/check.sh CHECKOUT [--task build] [--time] [--skip-install]
#                                [--migrate-after-build]
#
# 1. installs with the repo's own package manager (its lockfile decides);
# 2. runs `vbuild migrate` on the never-built checkout, as a newcomer does
#    after cloning (--migrate-after-build: after step 3 instead);
# 3. builds natively (the root's `TASK` script, else the manager's
#    recursive run) and records every file the build wrote (path, sha256);
# 4. deletes them, runs `vbuild run TASK` and records the same; compares
#    file sets and bytes;
# 4. 10 no-op reruns (all must hit), restore after deleting every output
#    (must hit and be byte-exact), one edit of a source file in a package
#    others depend on (must re-run exactly that package's targets and their
#    dependents), then the native build again (must still work).
#
# Prints one block of `key: value` lines (docs/real-world.md's table comes
# from them). With --time it also prints wall times (the cores are shared
# during development sessions: read them as rough). Exit status 1 when a
# check failed. Needs `vbuild` on PATH (or $VBUILD), node, and the package
# manager the repo uses.
set -uo pipefail

dir=""; task=build; timing=0; install=1; fresh=1
while [ $# -gt 0 ]; do
  case "$1" in
    --task) task="$2"; shift ;;
    --time) timing=1 ;;
    --skip-install) install=0 ;;
    --migrate-after-build) fresh=0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) dir="$1" ;;
  esac
  shift
done
[ -n "$dir" ] || { echo "usage: $0 CHECKOUT [--task build] [--time] [--skip-install] [--migrate-after-build]" >&2; exit 2; }
cd "$dir" || exit 2
VBUILD=${VBUILD:-vbuild}
export VBUILD_CACHE_DIR=${VBUILD_CACHE_DIR:-$PWD/.vbuild-check-cache}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
say() { printf '%s: %s\n' "$1" "$2"; }
fail() { say "FAIL" "$1"; failed=1; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}s')" "$1" "$(now)"; }

if [ -f pnpm-lock.yaml ] || [ -f pnpm-workspace.yaml ]; then pm=pnpm
elif [ -f yarn.lock ]; then pm=yarn
elif [ -f bun.lock ] || [ -f bun.lockb ]; then pm=bun
else pm=npm; fi
# pnpm: use the installed pnpm even where packageManager pins another (it
# cannot be downloaded everywhere), and let dependencies' build scripts run
# as the older pnpm the repo was written for did.
[ "$pm" = pnpm ] && export npm_config_manage_package_manager_versions=false
say repo "$(basename "$PWD")"
say manager "$pm $($pm --version 2>/dev/null | tail -1)"

# Every regular file outside node_modules, .git and the check's own cache,
# with its sha256: the build's outputs are what a build adds or changes.
snapshot() {
  find . \( -name node_modules -o -name .git -o -name .vbuild-check-cache -o -name .turbo -o -path ./.husky/_ \) -prune -o -type f -print0 \
    | sort -z | xargs -0 -r sha256sum | sed 's|  \./|  |' > "$1"
}
# Files in $2 that are new or changed against $1.
added() { python3 - "$1" "$2" <<'EOF'
import sys
def load(p):
    d = {}
    for line in open(p):
        h, f = line.rstrip("\n").split("  ", 1)
        d[f] = h
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
for f, h in sorted(b.items()):
    if a.get(f) != h:
        print(f"{h}  {f}")
EOF
}
states() { grep -Eo '^(hit|miss|uncached|failed|skipped)' "$1" | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//'; }
count() { grep -Ec "^$2( |$)" "$1" || true; }

# Before the install: what `prepare` scripts write counts as build output.
snapshot "$work/before"
if [ "$install" = 1 ]; then
  case $pm in
    pnpm) builds=""; [ "$(pnpm --version | cut -d. -f1)" -ge 10 ] && builds=--dangerously-allow-all-builds
          pnpm install --frozen-lockfile $builds >"$work/install.log" 2>&1 \
            || pnpm install $builds >>"$work/install.log" 2>&1 ;;
    yarn) yarn install --frozen-lockfile >"$work/install.log" 2>&1 || yarn install >>"$work/install.log" 2>&1 ;;
    npm) npm ci >"$work/install.log" 2>&1 || npm install >>"$work/install.log" 2>&1 ;;
    bun) bun install >"$work/install.log" 2>&1 ;;
  esac || { fail "install (see $work/install.log)"; tail -20 "$work/install.log"; exit 1; }
fi
say packages "$(find . -name node_modules -prune -o -name package.json -print | grep -vc '^\./package.json$')"

native() {
  if python3 -c "import json,sys; sys.exit(0 if '$task' in json.load(open('package.json')).get('scripts',{}) else 1)"; then
    $pm run "$task"
  else
    case $pm in
      pnpm) pnpm -r run "$task" ;;
      yarn) yarn workspaces run "$task" ;;
      *) npm run "$task" --workspaces --if-present ;;
    esac
  fi
}

# What migrate writes (never build outputs).
migrated() { grep -Ev '  ((.*/)?(BUILD|vbuild)\.toml|\.vbuild/.*)$' || true; }
do_migrate() {
  snapshot "$work/before-migrate"
  "$VBUILD" migrate --force >"$work/migrate.log" 2>&1 || { fail "migrate"; cat "$work/migrate.log"; exit 1; }
  snapshot "$work/after-migrate"
  edited=$(added "$work/before-migrate" "$work/after-migrate" | migrated | cut -d' ' -f3-)
  say migrate "$([ "$fresh" = 1 ] && echo "on the never-built checkout" || echo "after the native build")"
  say migrate_edited "${edited:-none}"
  say migrate_summary "$(head -1 "$work/migrate.log")"
  # What the TASK's targets declare (outs must be written; optional_outs may not be).
  say declared "$(TASK="$task" python3 - <<'PY'
import glob, os, tomllib
rows = []
for f in sorted(glob.glob("**/BUILD.toml", recursive=True)):
    if "node_modules" in f:
        continue
    t = tomllib.load(open(f, "rb")).get("target", {}).get(os.environ["TASK"])
    if t and "command" in t:
        rows.append(f"//{os.path.dirname(f)}: outs {t.get('outs', [])} optional_outs {t.get('optional_outs', [])}")
print("; ".join(rows) or "no target of the task")
PY
)"
  # Outputs already on disk would make the native/vbuild comparison below
  # compare nothing (the build "adds" no file): the check wants a checkout
  # that was never built.
  built=$(TASK="$task" python3 - <<'PY'
import glob, os, tomllib
for f in sorted(glob.glob("**/BUILD.toml", recursive=True)):
    t = tomllib.load(open(f, "rb")).get("target", {}).get(os.environ["TASK"]) or {}
    for out in t.get("outs", []) + t.get("optional_outs", []):
        path = os.path.join(os.path.dirname(f), out)
        if "node_modules" not in f and "*" not in out and os.path.exists(path):
            print(path)
PY
)
  [ "$fresh" = 1 ] && [ -n "$built" ] && fail "the checkout holds outputs before any build ($(echo $built | head -c 200)); check a fresh extract"
  sed -n '/^could not decide/,$p' "$work/migrate.log" | sed 's/^/  /'
}
[ "$fresh" = 1 ] && do_migrate

t=$(now)
if native >"$work/native.log" 2>&1; then say native "ok"; else fail "native build (tail below)"; tail -30 "$work/native.log"; fi
[ "$timing" = 1 ] && say native_time "$(elapsed "$t")"
snapshot "$work/after-native"
added "$work/before" "$work/after-native" | migrated > "$work/native-outs"
say native_files "$(wc -l < "$work/native-outs")"
[ "$fresh" = 0 ] && do_migrate
# The native build's own files are removed.
cut -d' ' -f3- "$work/native-outs" | while IFS= read -r f; do
  grep -q "  $f\$" "$work/before" || rm -f "$f"
done
snapshot "$work/clean"

run() { "$VBUILD" run "$task" >"$1.out" 2>"$1"; }
t=$(now)
run "$work/cold"; rc=$?
[ "$timing" = 1 ] && say cold_time "$(elapsed "$t")"
say cold "exit $rc: $(states "$work/cold")"
[ $rc = 0 ] || { fail "vbuild run $task"; grep -A15 '^failed' "$work/cold" | head -40; }
snapshot "$work/after-vbuild"
added "$work/clean" "$work/after-vbuild" | migrated > "$work/vbuild-outs"
say vbuild_files "$(wc -l < "$work/vbuild-outs")"
python3 - "$work/native-outs" "$work/vbuild-outs" <<'EOF'
import sys
def load(p):
    return {l.split("  ", 1)[1].rstrip("\n"): l.split("  ", 1)[0] for l in open(p) if l.strip()}
n, v = load(sys.argv[1]), load(sys.argv[2])
same = [f for f in n if v.get(f) == n[f]]
differ = [f for f in n if f in v and v[f] != n[f]]
only_n = [f for f in n if f not in v]
only_v = [f for f in v if f not in n]
print(f"identical: {len(same)} of {len(n)} native files")
for name, items in [("differ", differ), ("only_native", only_n), ("only_vbuild", only_v)]:
    print(f"{name}: {len(items)}" + ("" if not items else " (" + ", ".join(items[:8]) + (", ..." if len(items) > 8 else "") + ")"))
EOF

hits=0; t=$(now)
for i in 1 2 3 4 5 6 7 8 9 10; do
  run "$work/noop$i"
  if [ "$(count "$work/noop$i" miss)" = 0 ] && [ "$(count "$work/noop$i" uncached)" = 0 ] && [ "$(count "$work/noop$i" failed)" = 0 ] && [ "$(count "$work/noop$i" hit)" -gt 0 ]; then hits=$((hits + 1)); fi
done
[ "$timing" = 1 ] && say noop_time "$(elapsed "$t") for 10"
say noop_all_hits "$hits of 10 ($(states "$work/noop1"))"
[ $hits = 10 ] || fail "no-op reruns: $(grep -E '^(miss|uncached)' "$work/noop1" | head -5 | tr '\n' ';')"

# Restore: every output deleted, then restored from the store.
cut -d' ' -f3- "$work/vbuild-outs" | while IFS= read -r f; do rm -f "$f"; done
t=$(now)
run "$work/restore"
[ "$timing" = 1 ] && say restore_time "$(elapsed "$t")"
snapshot "$work/after-restore"
added "$work/clean" "$work/after-restore" | migrated > "$work/restored-outs"
if cmp -s "$work/vbuild-outs" "$work/restored-outs" && [ "$(count "$work/restore" miss)" = 0 ]; then
  say restore "byte-exact, $(states "$work/restore")"
else
  fail "restore: $(states "$work/restore"); $(diff "$work/vbuild-outs" "$work/restored-outs" | head -5 | tr '\n' ';')"
fi

# One edit: a source file of the package with the most dependents.
pick=$(python3 - <<'EOF'
import glob, os, re, tomllib
deps, targets = {}, {}
for f in glob.glob("**/BUILD.toml", recursive=True):
    if "node_modules" in f:
        continue
    pkg = os.path.dirname(f)
    for name, t in tomllib.load(open(f, "rb")).get("target", {}).items():
        label = f"//{pkg}:{name}"
        targets[label] = t
        deps[label] = [d if d.startswith("//") else f"//{pkg}{d}" for d in t.get("deps", [])]
def dependents(pkg):
    seen = {l for l in targets if l.split(":")[0] == "//" + pkg}
    grew = True
    while grew:
        grew = False
        for l, ds in deps.items():
            if l not in seen and any(d in seen for d in ds):
                seen.add(l); grew = True
    return seen
best = None
for l, t in targets.items():
    pkg = l[2:].split(":")[0]
    if "command" not in t:
        continue
    srcs = [f for f in glob.glob(os.path.join(pkg, "src", "**", "*.*"), recursive=True)
            if re.search(r"\.(ts|tsx|js|jsx|mjs|vue|svelte)$", f) and not re.search(r"\.(test|spec)\.", f)]
    if not srcs:
        continue
    n = len(dependents(pkg))
    if best is None or n > best[0]:
        best = (n, sorted(srcs)[0], pkg)
if best:
    print(best[1])
    print(" ".join(sorted(dependents(best[2]))))
EOF
)
file=$(echo "$pick" | sed -n 1p); expect=$(echo "$pick" | sed -n 2p)
if [ -n "$file" ]; then
  cp "$file" "$work/edited.bak"
  printf '\n// vbuild check edit\n' >> "$file"
  t=$(now)
  run "$work/edit"
  [ "$timing" = 1 ] && say edit_time "$(elapsed "$t")"
  ran=$(grep -E '^(miss|uncached)' "$work/edit" | awk '{print $2}' | sort | tr '\n' ' ' | sed 's/ $//')
  # Only targets the run selected count: those of `TASK` and their deps.
  selected=$(grep -E '^(hit|miss|uncached|failed)' "$work/edit" | awk '{print $2}' | sort)
  want=$(for l in $expect; do echo "$selected" | grep -qx "$l" && echo "$l"; done | sort | tr '\n' ' ' | sed 's/ $//')
  say edit "$file: re-ran [$ran]"
  [ "$ran" = "$want" ] || fail "edit re-ran [$ran], expected [$want]"
  cp "$work/edited.bak" "$file"
  run "$work/reverted"
  [ "$(count "$work/reverted" miss)" = 0 ] || say edit_reverted "$(states "$work/reverted") (expected all hits)"
else
  say edit "no package with src/ sources and a command"
fi

# The team's own build still works next to vbuild's files.
if native >"$work/native2.log" 2>&1; then say native_after_migrate ok; else fail "native build after migrate"; tail -20 "$work/native2.log"; fi
say result "$([ $failed = 0 ] && echo pass || echo FAIL)"
exit $failed
