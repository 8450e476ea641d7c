#!/usr/bin/env python3
"""Benchmarks vbuild against turbo and vp (vite-plus) on generated pnpm
workspaces, side by side, in four scenarios:

  cold     empty cache, no outputs (vbuild runs in its default sandbox)
  cached   nothing changed since the tool's own last run
  restore  cache warm, every dist/ deleted
  leaf     one source file of a package nothing depends on edited

Runs alternate between tools (run 1 of each tool, then run 2 of each, ...).
Before each timed run the workspace is put into the scenario's state *for
that tool* with an untimed run of the same tool, so no tool pays for another
tool having rewritten dist/. Each timed run records wall time, CPU time
(user+sys of the process and every descendant it reaped) and peak RSS (the
largest of the process and its reaped descendants, from wait4), and is
checked: exit status 0, every dist/out.js present, and after a leaf edit the
leaf's output reflects the edit.

usage: bench/run.py [--sizes 10,100,1000] [--runs 3] [--tools vbuild,turbo,vp]
                    [--scenarios cold,cached,restore,leaf] [--vbuild PATH]
                    [--workdir DIR] [--json FILE] [--require-peers]

Peers come from bench/node_modules (`npm ci` in bench/). turbo is run
through its native binary, not the Node wrapper; vp through `node vp`.
A peer that is missing or fails is reported as such and the run goes on;
`--require-peers` makes that an error.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
import gen_workspace  # noqa: E402

NM = os.path.join(BENCH, "node_modules")
SCENARIOS = ["cold", "cached", "restore", "leaf"]
TOOLS = ["vbuild", "turbo", "vp"]


class ToolUnavailable(Exception):
    pass


def find_turbo():
    """turbo's native binary (the npm `turbo` package is a Node wrapper
    around a platform package such as @turbo/linux-64)."""
    scoped = os.path.join(NM, "@turbo")
    if os.path.isdir(scoped):
        for plat in sorted(os.listdir(scoped)):
            exe = os.path.join(scoped, plat, "bin", "turbo")
            if os.access(exe, os.X_OK):
                return exe
    for plat in ("turbo-linux-64", "turbo-linux-x64-gnu", "turbo-linux-arm64"):
        exe = os.path.join(NM, plat, "bin", "turbo")
        if os.access(exe, os.X_OK):
            return exe
    raise ToolUnavailable("turbo's native binary not found under bench/node_modules (run `npm ci` in bench/)")


def find_vp():
    vp = os.path.join(NM, "vite-plus", "bin", "vp")
    if not os.path.exists(vp):
        raise ToolUnavailable("vite-plus not found under bench/node_modules (run `npm ci` in bench/)")
    node = shutil.which("node")
    if not node:
        raise ToolUnavailable("node not on PATH")
    return [node, vp]


class Tool:
    def __init__(self, name, argv, cache_dirs):
        self.name = name
        self.argv = argv
        self.cache_dirs = cache_dirs  # removed for `cold`
        self.error = None  # set when the tool cannot run here


def rm(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def measure(argv, cwd, env, log):
    """Runs argv; returns (exit status, wall s, cpu s, peak rss KiB)."""
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def tail(path, lines=15):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Bench:
    def __init__(self, args, n, home):
        self.args = args
        self.n = n
        self.work = os.path.join(args.workdir, f"n{n}")
        self.ws = os.path.join(self.work, "ws")
        self.leaf = gen_workspace.leaf(n, args.seed)
        self.leaf_src = os.path.join(self.ws, "packages", f"p{self.leaf:04d}", "src", "f0.js")
        self.edits = 0
        path = os.pathsep.join([os.path.join(NM, ".bin"), os.environ.get("PATH", "/usr/bin:/bin")])
        self.env = {
            "PATH": path,
            "HOME": home,
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "CI": "1",
            # Telemetry and update checks off for every tool.
            "DO_NOT_TRACK": "1",
            "TURBO_TELEMETRY_DISABLED": "1",
            "TURBO_TELEMETRY_MESSAGE_DISABLED": "1",
            "TURBO_NO_UPDATE_NOTIFIER": "1",
            "NPM_CONFIG_UPDATE_NOTIFIER": "false",
            "PNPM_CONFIG_UPDATE_NOTIFIER": "false",
            "VBUILD_CACHE_DIR": os.path.join(self.work, "vbuild-store"),
        }
        self.tools = []
        for name in args.tools:
            try:
                if name == "vbuild":
                    tool = Tool("vbuild", [args.vbuild, "run", "//..."], [self.env["VBUILD_CACHE_DIR"]])
                elif name == "turbo":
                    tool = Tool("turbo", [find_turbo(), "run", "build"], [os.path.join(self.ws, ".turbo")])
                elif name == "vp":
                    tool = Tool(
                        "vp",
                        find_vp() + ["run", "-r", "--cache", "build"],
                        [os.path.join(self.ws, "node_modules", ".vite", "task-cache")],
                    )
                else:
                    raise SystemExit(f"unknown tool {name}")
            except ToolUnavailable as e:
                tool = Tool(name, None, [])
                tool.error = str(e)
            self.tools.append(tool)

    def dists(self):
        return [os.path.join(self.ws, "packages", f"p{i:04d}", "dist") for i in range(self.n)]

    def clean_outputs(self):
        for d in self.dists():
            rm(d)

    def check_outputs(self):
        missing = [d for d in self.dists() if not os.path.isfile(os.path.join(d, "out.js"))]
        if missing:
            return f"{len(missing)} dist/out.js missing (first: {os.path.relpath(missing[0], self.ws)})"
        if self.edits:
            out = os.path.join(self.dists()[self.leaf], "out.js")
            with open(out) as f:
                if f"edit {self.edits}" not in f.read():
                    return f"leaf output does not reflect edit {self.edits}"
        return None

    def edit_leaf(self):
        self.edits += 1
        with open(self.leaf_src) as f:
            text = f.read().split("// edit ")[0]
        with open(self.leaf_src, "w") as f:
            f.write(f"{text}// edit {self.edits}\n")

    def run(self, tool, label):
        log = os.path.join(self.work, f"{tool.name}-{label}.log")
        code, wall, cpu, rss = measure(tool.argv, self.ws, self.env, log)
        if code != 0:
            raise RuntimeError(f"{tool.name} exited {code} ({label}); {log}:\n{tail(log)}")
        return wall, cpu, rss, log

    def prepare(self, tool, scenario):
        if scenario == "cold":
            self.clean_outputs()
            for d in tool.cache_dirs:
                rm(d)
            return
        # The tool's own untimed run: cache warm, outputs as it leaves them.
        self.run(tool, f"{scenario}-prep")
        if scenario == "restore":
            self.clean_outputs()
        elif scenario == "leaf":
            self.edit_leaf()

    def setup(self):
        os.makedirs(self.work, exist_ok=True)
        stamp = os.path.join(self.work, "generated")
        want = f"{self.n} {self.args.seed} {gen_workspace.PNPM_VERSION}"
        have = open(stamp).read() if os.path.exists(stamp) else ""
        pnpm = os.path.join(NM, ".bin", "pnpm")
        install = os.path.exists(pnpm)
        if not install:
            # vbuild needs no node_modules (build.js uses relative paths);
            # turbo and vp need an installed pnpm workspace.
            for tool in self.tools:
                if tool.name != "vbuild" and not tool.error:
                    tool.error = "pnpm not installed under bench/node_modules (run `npm ci` in bench/)"
            want += " no-install"
        if have != want or not os.path.isdir(self.ws):
            print(f"# generating N={self.n} in {self.ws}", file=sys.stderr)
            gen_workspace.generate(self.n, self.ws, self.args.seed, install=install, pnpm=pnpm)
            with open(stamp, "w") as f:
                f.write(want)
        # Start from the committed sources and no outputs.
        subprocess.run(["git", "checkout", "-q", "--", "packages"], cwd=self.ws, check=True)
        self.clean_outputs()

    def go(self):
        self.setup()
        results = {}  # (scenario, tool) -> list of (wall, cpu, rss)
        for scenario in self.args.scenarios:
            for r in range(self.args.runs):
                for tool in self.tools:
                    if tool.error:
                        continue
                    try:
                        self.prepare(tool, scenario)
                        wall, cpu, rss, log = self.run(tool, f"{scenario}-{r}")
                        bad = self.check_outputs()
                        if bad:
                            raise RuntimeError(f"{tool.name} {scenario}: {bad}; {log}:\n{tail(log)}")
                    except RuntimeError as e:
                        if tool.name == "vbuild" or self.args.require_peers:
                            raise
                        tool.error = f"failed: {e}"
                        print(f"# {tool.name} disabled: {e}", file=sys.stderr)
                        continue
                    results.setdefault((scenario, tool.name), []).append((wall, cpu, rss))
                    print(
                        f"# N={self.n} {scenario:8} run {r + 1} {tool.name:7} "
                        f"wall {wall:7.3f}s cpu {cpu:7.3f}s rss {rss / 1024:6.1f}MiB",
                        file=sys.stderr,
                    )
        subprocess.run(["git", "checkout", "-q", "--", "packages"], cwd=self.ws, check=True)
        return results


def med(samples, i):
    return statistics.median(s[i] for s in samples)


def fmt_ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def table(n, tools, results):
    names = [t.name for t in tools]
    head = ["N", "scenario"]
    for t in names:
        head += [f"{t} wall", f"{t} cpu", f"{t} rss"]
    for peer in ("turbo", "vp"):
        if "vbuild" in names and peer in names:
            head += [f"wall vb/{peer}", f"cpu vb/{peer}", f"rss vb/{peer}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario in SCENARIOS:
        if not any((scenario, t) in results for t in names):
            continue
        row = [str(n), scenario]
        stats = {}
        for t in names:
            s = results.get((scenario, t))
            if s:
                stats[t] = (med(s, 0), med(s, 1), med(s, 2) / 1024)
                row += [f"{stats[t][0]:.3f} s", f"{stats[t][1]:.3f} s", f"{stats[t][2]:.0f} MiB"]
            else:
                row += ["n/a", "n/a", "n/a"]
        for peer in ("turbo", "vp"):
            if "vbuild" in names and peer in names:
                v, p = stats.get("vbuild"), stats.get(peer)
                for i in range(3):
                    row.append(fmt_ratio(v[i] if v else None, p[i] if p else None))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--vbuild", default=os.path.join(REPO, "target", "release", "vbuild"))
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "vbuild-bench"))
    ap.add_argument("--json", help="also write the raw samples here")
    ap.add_argument("--require-peers", action="store_true", help="fail if turbo or vp cannot run")
    args = ap.parse_args()
    args.tools = args.tools.split(",")
    args.scenarios = [s for s in SCENARIOS if s in args.scenarios.split(",")]
    args.vbuild = os.path.abspath(args.vbuild)
    if "vbuild" in args.tools and not os.access(args.vbuild, os.X_OK):
        sys.exit(f"no vbuild binary at {args.vbuild} (cargo build --release -p vbuild, or --vbuild)")

    home = tempfile.mkdtemp(prefix="vbuild-bench-home-")
    tables, raw, notes = [], {}, []
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            bench = Bench(args, n, home)
            results = bench.go()
            tables.append(table(n, bench.tools, results))
            raw[n] = {f"{s}/{t}": v for (s, t), v in results.items()}
            for t in bench.tools:
                if t.error:
                    notes.append(f"N={n}: {t.name} not measured: {t.error.splitlines()[0]}")
    finally:
        shutil.rmtree(home, ignore_errors=True)

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}")
    print(f"Medians of {args.runs} run(s); wall, CPU (user+sys) and peak RSS; ratios are vbuild / peer.\n")
    for t in tables:
        print(t + "\n")
    for note in notes:
        print(f"NOTE: {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
