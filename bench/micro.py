#!/usr/bin/env python3
"""Micro-benchmarks of vbuild itself, each compared side by side in one run.

  micro.py noop     no-op (all-hit) wall time of examples/basic and of a
                    generated 200-target workspace
  micro.py sandbox  per-action overhead of the sandbox modes: 200 targets
                    whose command is `true`, run uncached with -j1, against
                    spawning `true` 200 times directly
  micro.py staging  per-action syscalls (strace -f -c) on the migrate path at
                    N=100 and N=1000 (--sizes), both sandbox modes: one
                    action run after a source edit minus the same run as a hit,
                    for a package with no dependencies and for the leaf;
                    flat across N when staging is O(what the action reaches)
  micro.py cold     per-action syscalls (strace -f -c) of a cold build on the
                    migrate path (--n packages, namespace sandbox, store and
                    every dist/ deleted first, as run.py's cold scenario),
                    next to one `node build.js` run directly: what vbuild
                    adds per action

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
        return os.path.abspath(os.environ["VBUILD"])
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


STAGING_CALLS = ["mkdir", "symlink", "mount", "openat", "statx", "getdents64", "linkat", "total"]


def strace_counts(cmd, cwd, env, out):
    subprocess.run(["strace", "-f", "-c", "-o", out] + cmd, cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    counts = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors,] syscall
            if len(parts) >= 5 and parts[3].isdigit():
                counts[parts[-1]] = int(parts[3])
    return counts


def migrate_path(scenario):
    """What a scenario on the migrate path needs (strace, bench's pnpm):
    the environment to run in and a function that generates, installs
    and migrates a workspace of N packages."""
    if not shutil.which("strace"):
        sys.exit(f"{scenario} needs strace")
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import gen_workspace
    import workspaces
    pnpm = os.path.join(workspaces.NM, ".bin", "pnpm")
    if not os.path.exists(pnpm):
        sys.exit(f"{scenario} needs pnpm: run `npm install` in bench/")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.join(workspaces.NM, ".bin"), env.get("PATH", "")])

    def make(n, ws, vb):
        gen_workspace.generate(n, ws, install=True, pnpm=pnpm, mode="migrate")
        workspaces.migrate(ws, vb)
    return env, make


def staging(args, vb, tmp):
    env, make = migrate_path("staging")
    import gen_workspace
    print("per-action syscalls: `vbuild run LABEL` after editing one of its sources, minus the same run as a hit (strace -f -c)")
    print(f"{'N':>5} {'sandbox':<11} {'target':<22} " + " ".join(f"{c:>10}" for c in STAGING_CALLS))
    for n in [int(x) for x in args.sizes.split(",")]:
        ws = os.path.join(tmp, f"ws{n}")
        make(n, ws, vb)
        leaf = gen_workspace.leaf(n, 42)
        # A store per size: equal packages of another size would hit.
        env["VBUILD_CACHE_DIR"] = os.path.join(tmp, f"store{n}")
        subprocess.run([vb, "run", "//...", "-j2"], cwd=ws, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        edits = 0
        for mode in ["namespaces", "scratch"]:
            for pkg in ["p0000", f"p{leaf:04d}"]:
                # One source edited: this action runs, its deps hit.
                label = f"//packages/{pkg}:build"
                base = [vb, "run", label, "-j1", "--sandbox", mode]
                subprocess.run(base, cwd=ws, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                hit = strace_counts(base, ws, env, os.path.join(tmp, "hit.txt"))
                edits += 1
                with open(os.path.join(ws, "packages", pkg, "src", "f0.js"), "a") as f:
                    f.write(f"// edit {edits}\n")
                run = strace_counts(base, ws, env, os.path.join(tmp, "run.txt"))
                diff = [run.get(c, 0) - hit.get(c, 0) for c in STAGING_CALLS]
                print(f"{n:>5} {mode:<11} {label:<22} " + " ".join(f"{d:>10}" for d in diff))


COLD_CALLS = ["execve", "clone", "clone3", "mount", "mkdir", "openat", "unlinkat", "rename",
              "linkat", "statx", "getdents64", "lchown", "fchmod", "chmod", "total"]


def cold(args, vb, tmp):
    env, make = migrate_path("cold")
    ws = os.path.join(tmp, "ws")
    make(args.n, ws, vb)
    store = os.path.join(tmp, "store")
    env["VBUILD_CACHE_DIR"] = store

    def clean():
        shutil.rmtree(store, ignore_errors=True)
        for pkg in os.listdir(os.path.join(ws, "packages")):
            shutil.rmtree(os.path.join(ws, "packages", pkg, "dist"), ignore_errors=True)

    # One cold build first: the timed one then runs right after a store was
    # deleted, as in run.py (on ext4 that makes every new inode dearer).
    clean()
    subprocess.run([vb, "run", "//..."], cwd=ws, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clean()
    build = strace_counts([vb, "run", "//..."], ws, env, os.path.join(tmp, "cold.txt"))
    node = strace_counts(["node", "build.js"], os.path.join(ws, "packages", "p0000"), env,
                         os.path.join(tmp, "node.txt"))
    print(f"cold build of {args.n} packages (migrate path, namespace sandbox): syscalls per action (strace -f -c)")
    print(f"{'':<24} " + " ".join(f"{c:>10}" for c in COLD_CALLS))
    print(f"{'vbuild run //... / N':<24} " + " ".join(f"{build.get(c, 0) / args.n:>10.1f}" for c in COLD_CALLS))
    print(f"{'node build.js (direct)':<24} " + " ".join(f"{node.get(c, 0):>10}" for c in COLD_CALLS))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["noop", "sandbox", "staging", "cold"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n", type=int, default=200, help="targets for `sandbox`, packages for `cold`")
    ap.add_argument("--sizes", default="100,1000", help="workspace sizes for `staging`")
    args = ap.parse_args()
    vb = vbuild_binary()
    with tempfile.TemporaryDirectory() as tmp:
        {"noop": noop, "sandbox": sandbox, "staging": staging, "cold": cold}[args.what](args, vb, tmp)


if __name__ == "__main__":
    main()
