#!/usr/bin/env bash
# Times vbuild against each corpus repo's own runner (issue 13: cold ≤ 1.0×
# the repo's own runner, all-hit ≤ 0.25×), on the checkouts
# bench/real/prepare.sh made (installed, migrated, checked): one
# `bench/run.py --real` per repo, then one table for all of them.
#
#   bench/real/time-corpus.sh [NAME...]
#
# Environment: REAL (default /work/tmp-migrate/real), VBUILD (default
# target/release/vbuild), PM_BIN (pnpm 9 / yarn 1 first on PATH, as for
# prepare.sh), RUNS (all-hit runs, default 5), COLD_RUNS (default 3),
# OUT (work directory and raw JSON, default $REAL/.timing).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
REAL=${REAL:-/work/tmp-migrate/real}
VBUILD=$(realpath "${VBUILD:-$repo/target/release/vbuild}")
RUNS=${RUNS:-5}; COLD_RUNS=${COLD_RUNS:-3}
OUT=${OUT:-$REAL/.timing}
[ -n "${PM_BIN:-}" ] && export PATH="$PM_BIN:$PATH"
[ -x "$VBUILD" ] || { echo "no vbuild at $VBUILD (cargo build --release -p vbuild, or VBUILD=...)" >&2; exit 2; }
mkdir -p "$OUT"
names=("$@")
if [ ${#names[@]} = 0 ]; then
  for ok in "$REAL"/*.ok; do [ -e "$ok" ] && names+=("$(basename "$ok" .ok)"); done
fi
[ ${#names[@]} -gt 0 ] || { echo "no prepared checkouts under $REAL (bench/real/prepare.sh)" >&2; exit 2; }
started=$(date +%s)
for n in "${names[@]}"; do
  [ -e "$REAL/$n.ok" ] || { echo "# $n: not prepared (or its check failed): skipped" >&2; continue; }
  task=$(cat "$REAL/$n.task" 2>/dev/null || echo build)
  echo "# $n: task $task" >&2
  python3 "$repo/bench/run.py" --real "$REAL/$n" --task "$task" --tools vbuild,own \
    --scenarios cold,cached --runs "$RUNS" --cold-runs "$COLD_RUNS" \
    --vbuild "$VBUILD" --workdir "$OUT/work" --json "$OUT/$n.json" > "$OUT/$n.txt" 2> "$OUT/$n.log" \
    || echo "# $n: bench/run.py failed, see $OUT/$n.log" >&2
done
python3 - "$OUT" "$(( $(date +%s) - started ))" "${names[@]}" <<'PY'
import json, os, re, statistics, sys
out, secs, names = sys.argv[1], sys.argv[2], sys.argv[3:]
print(f"Medians of wall time; cold: both caches empty and outputs deleted; all-hit: nothing changed since the tool's own last run ({secs} s in all).\n")
print("| repo | own runner | cold own | cold vbuild | cold ratio (≤ 1.0) | all-hit own | all-hit vbuild | all-hit ratio (≤ 0.25) |")
print("|---|---|---|---|---|---|---|---|")
for n in names:
    try:
        raw = json.load(open(os.path.join(out, f"{n}.json")))
    except OSError:
        print(f"| {n} | (no result: see {out}/{n}.log) | | | | | | |")
        continue
    samples = next(iter(raw.values()), {})
    text = open(os.path.join(out, f"{n}.txt")).read()
    m = re.search(r"own = (.*)", text)
    runner = m.group(1).strip().replace("|", "\\|") if m else "?"
    wall = lambda k: statistics.median(s[0] for s in samples[k]) if samples.get(k) else None
    row = [n, f"`{runner}`"]
    for sc, goal in (("cold", 1.0), ("cached", 0.25)):
        o, v = wall(f"{sc}/own"), wall(f"{sc}/vbuild")
        row += [f"{o:.3f} s" if o else "n/a", f"{v:.3f} s" if v else "n/a"]
        row.append(f"{v / o:.2f} {'met' if v / o <= goal else '**missed**'}" if o and v else "n/a")
    print("| " + " | ".join(row) + " |")
notes = [l for n in names if os.path.exists(os.path.join(out, f"{n}.txt")) for l in open(os.path.join(out, f"{n}.txt")) if l.startswith("NOTE") and "own =" not in l]
for l in notes:
    print(l.rstrip())
PY
