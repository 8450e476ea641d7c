#!/usr/bin/env python3
"""Micro-benchmarks of vbuild itself, each compared side by side in one run.

  micro.py noop     no-op (all-hit) wall time of examples/basic and of a
                    generated 200-target workspace
  micro.py sandbox  per-action overhead of the sandbox modes: 200 targets
                    whose command is `true`, run uncached with -j1, against
                    spawning `true` 200 times directly

Builds vbuild in release mode first (or uses $VBUILD). Medians of --runs.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def vbuild_binary():
    if os.environ.get("VBUILD"):
        return os.environ["VBUILD"]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "vbuild"], cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "vbuild")


def timed(cmd, cwd, env):
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def median_of(runs, fn):
    return statistics.median(fn() for _ in range(runs))


def noop(args, vb, tmp):
    env = dict(os.environ, VBUILD_CACHE_DIR=os.path.join(tmp, "store"))
    basic = os.path.join(tmp, "basic")
    shutil.copytree(os.path.join(ROOT, "examples", "basic"), basic)
    gen = os.path.join(tmp, "gen200")
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gen_shell_workspace.py"), "200", gen], check=True)
    rows = []
    for name, ws in [("examples/basic (4 targets)", basic), ("generated, 200 targets", gen)]:
        cold = timed([vb, "run", "//..."], ws, env)
        # Let the stat cache's racy window (2 s) pass, as it would between edits.
        time.sleep(2.5)
        timed([vb, "run", "//..."], ws, env)
        hit = median_of(args.runs, lambda: timed([vb, "run", "//..."], ws, env))
        rows.append((name, cold, hit))
    print(f"{'workspace':<28} {'cold':>9} {'no-op (median of %d)' % args.runs:>22}")
    for name, cold, hit in rows:
        print(f"{name:<28} {cold * 1000:>7.1f}ms {hit * 1000:>20.1f}ms")


def sandbox(args, vb, tmp):
    env = dict(os.environ, VBUILD_CACHE_DIR=os.path.join(tmp, "store"))
    ws = os.path.join(tmp, "true200")
    os.makedirs(ws)
    with open(os.path.join(ws, "vbuild.toml"), "w") as f:
        f.write('[workspace]\nname = "true200"\n')
    for i in range(args.n):
        pkg = os.path.join(ws, f"t{i:03d}")
        os.makedirs(pkg)
        with open(os.path.join(pkg, "BUILD.toml"), "w") as f:
            f.write('[target.build]\ncommand = ["true"]\n')
    direct = median_of(args.runs, lambda: timed(["bash", "-c", f"for i in $(seq {args.n}); do /bin/true; done"], ws, env))
    print(f"{args.n} actions, -j1, uncached; median of {args.runs} runs")
    print(f"{'mode':<22} {'total':>9} {'per action':>11} {'overhead vs direct':>19}")
    print(f"{'direct spawn (bash)':<22} {direct * 1000:>7.1f}ms {direct / args.n * 1000:>9.2f}ms {'-':>19}")
    for mode in ["none", "scratch", "namespaces"]:
        cmd = [vb, "run", "//...", "--no-cache", "-j1", "--sandbox", mode]
        total = median_of(args.runs, lambda: timed(cmd, ws, env))
        extra = (total - direct) / args.n * 1000
        print(f"{'vbuild --sandbox ' + mode:<22} {total * 1000:>7.1f}ms {total / args.n * 1000:>9.2f}ms {extra:>17.2f}ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["noop", "sandbox"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n", type=int, default=200, help="targets for `sandbox`")
    args = ap.parse_args()
    vb = vbuild_binary()
    with tempfile.TemporaryDirectory() as tmp:
        {"noop": noop, "sandbox": sandbox}[args.what](args, vb, tmp)


if __name__ == "__main__":
    main()
