#!/usr/bin/env python3
"""Benchmarks vbuild against turbo, vp (vite-plus) and nx on pnpm
workspaces, side by side, in four scenarios:

  cold     empty cache, no outputs (vbuild runs in its default sandbox)
  cached   nothing changed since the tool's own last run (a no-op)
  restore  cache warm, every output deleted
  leaf     one source file of a package nothing depends on edited

Workspaces (bench/workspaces.py): `--mode migrate` (default, the users'
path) generates N packages with no BUILD.toml, `pnpm install`s them (only
workspace links: no registry) and runs `vbuild migrate`; `--mode hand` uses
hand-written BUILD.toml files (no node_modules staged); `--real DIR`
measures a checkout (dependencies installed) instead, migrated unless it
has a vbuild.toml.

Runs alternate between tools (run 1 of each tool, then run 2 of each, ...).
Before each timed run the workspace is put into the scenario's state *for
that tool* with an untimed run of the same tool, so no tool pays for another
tool having rewritten the outputs. Each timed run records wall time, CPU
time (user+sys of the process and every descendant it reaped) and peak RSS
(the largest of the process and its reaped descendants, from wait4), and is
checked: exit status 0, every output present, and after a leaf edit the
leaf's output reflects the edit.

usage: bench/run.py [--mode migrate|hand] [--real DIR [--leaf FILE] [--task build]]
                    [--sizes 200,1000] [--runs 5] [--cold-runs N[,N...]]
                    [--tools vbuild,turbo,vp,nx,pnpm] [--scenarios cold,cached,restore,leaf]
                    [--vbuild PATH] [--workdir DIR] [--json FILE] [--require-peers]

Peers come from bench/node_modules (`npm install` in bench/). turbo runs
through its native binary, not the Node wrapper; vp through `node vp`; nx
with its daemon, cloud and TUI off; `own` (for --real) is the repo's own
runner: its package manager (found by lockfile, on the caller's PATH) running
the root's TASK script (`pnpm run build`, which may be `turbo run build`,
with the repo's installed turbo and its cache), else the manager's recursive
run (`pnpm -r run build`, `yarn workspaces run build`, `npm run build
--workspaces`); `pnpm` runs bench's pnpm on the root script, uncached. A peer that is missing or fails is
reported as such and the run goes on; `--require-peers` makes that an error.
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
import workspaces  # noqa: E402
from workspaces import NM, rm  # noqa: E402

SCENARIOS = ["cold", "cached", "restore", "leaf"]
TOOLS = ["vbuild", "turbo", "vp", "nx"]
PEERS = ["turbo", "vp", "nx", "pnpm", "own"]
# The targets (vbuild wall / peer wall), on the migrate path.
TARGETS = {
    ("cold", "vp"): (1.0, 1.0),
    ("cold", "turbo"): (0.5, 0.5),
    ("cached", "turbo"): (0.25, 0.2),
    ("restore", "turbo"): (0.25, 0.25),
    ("leaf", "turbo"): (0.3, 0.3),
    # --real: the repo's own runner.
    ("cold", "pnpm"): (1.0, 1.0),
    ("cold", "own"): (1.0, 1.0),
    ("cached", "own"): (0.25, 0.25),
}


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
    raise ToolUnavailable("turbo's native binary not found under bench/node_modules (run `npm install` in bench/)")


def node_script(rel, what):
    script = os.path.join(NM, rel)
    if not os.path.exists(script):
        raise ToolUnavailable(f"{what} not found under bench/node_modules (run `npm install` in bench/)")
    node = shutil.which("node")
    if not node:
        raise ToolUnavailable("node not on PATH")
    return [node, script]


class Tool:
    def __init__(self, name, argv, cache_dirs):
        self.name = name
        self.argv = argv
        self.cache_dirs = cache_dirs  # removed for `cold`
        self.error = None  # set when the tool cannot run here


def make_tool(name, args, ws, env):
    try:
        if name == "vbuild":
            # A real repo has test and lint targets too: the build task
            # only, as its own `build` script and turbo/nx run it.
            what = args.task if args.real else "//..."
            return Tool("vbuild", [args.vbuild, "run", what], [env["VBUILD_CACHE_DIR"]])
        if name == "turbo":
            return Tool("turbo", [find_turbo(), "run", "build"], [os.path.join(ws, ".turbo")])
        if name == "vp":
            argv = node_script(os.path.join("vite-plus", "bin", "vp"), "vite-plus")
            cache = os.path.join(ws, "node_modules", ".vite", "task-cache")
            return Tool("vp", argv + ["run", "-r", "--cache", "build"], [cache])
        if name == "pnpm":
            # The repo's own script (`pnpm run build`, e.g. `pnpm -r build`): no cache.
            pnpm = os.path.join(NM, ".bin", "pnpm")
            if not os.path.exists(pnpm):
                raise ToolUnavailable("pnpm not installed under bench/node_modules (run `npm install` in bench/)")
            return Tool("pnpm", [pnpm, "run", "build"], [])
        if name == "own":
            if not os.path.exists(os.path.join(ws, "package.json")):
                raise ToolUnavailable("not set up yet")
            return own_runner(args.task, ws)
        if name == "nx":
            argv = node_script(os.path.join("nx", "dist", "bin", "nx.js"), "nx")
            argv += ["run-many", "-t", "build", "--outputStyle=static"]
            return Tool("nx", argv, [os.path.join(ws, ".nx", "cache"), os.path.join(ws, ".nx", "workspace-data")])
    except ToolUnavailable as e:
        tool = Tool(name, None, [])
        tool.error = str(e)
        return tool
    raise SystemExit(f"unknown tool {name}")


def own_runner(task, ws):
    """The repo's own runner for `task`, as bench/real/check.sh runs it
    natively: the package manager its lockfile names, on the caller's PATH
    (the repo may need an older pnpm or yarn 1 than bench's)."""
    if os.path.exists(os.path.join(ws, "pnpm-lock.yaml")) or os.path.exists(os.path.join(ws, "pnpm-workspace.yaml")):
        pm = "pnpm"
    elif os.path.exists(os.path.join(ws, "yarn.lock")):
        pm = "yarn"
    else:
        pm = "npm"
    exe = shutil.which(pm)
    if not exe:
        raise ToolUnavailable(f"{pm} (the repo's package manager) not on PATH")
    with open(os.path.join(ws, "package.json")) as f:
        scripts = json.load(f).get("scripts", {})
    if task in scripts:
        argv, what = [exe, "run", task], f"{pm} run {task}: {scripts[task]}"
    elif pm == "pnpm":
        argv, what = [exe, "-r", "run", task], f"pnpm -r run {task}"
    elif pm == "yarn":
        argv, what = [exe, "workspaces", "run", task], f"yarn workspaces run {task}"
    else:
        argv, what = [exe, "run", task, "--workspaces", "--if-present"], f"npm run {task} --workspaces"
    # Its caches, emptied for `cold`: turbo 2 (.turbo), turbo 1
    # (node_modules/.cache/turbo), nx.
    caches = [os.path.join(ws, ".turbo"), os.path.join(ws, "node_modules", ".cache", "turbo"), os.path.join(ws, ".nx", "cache")]
    tool = Tool("own", argv, caches)
    tool.what = what
    return tool


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
    def __init__(self, args, space, work, home, cold_runs=None):
        self.args = args
        self.cold_runs = cold_runs
        self.space = space
        self.work = work
        self.ws = space.ws
        path = os.pathsep.join([os.path.join(NM, ".bin"), os.environ.get("PATH", "/usr/bin:/bin")])
        self.env = {
            "PATH": path,
            "HOME": home,
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "CI": "1",
            # Telemetry, update checks, daemons and cloud off for every tool.
            "DO_NOT_TRACK": "1",
            "TURBO_TELEMETRY_DISABLED": "1",
            "TURBO_TELEMETRY_MESSAGE_DISABLED": "1",
            "TURBO_NO_UPDATE_NOTIFIER": "1",
            "NPM_CONFIG_UPDATE_NOTIFIER": "false",
            "PNPM_CONFIG_UPDATE_NOTIFIER": "false",
            "NX_DAEMON": "false",
            "NX_NO_CLOUD": "true",
            "NX_TUI": "false",
            "NX_SKIP_NX_CACHE": "false",
            # The repo's own pnpm even where packageManager pins another.
            "npm_config_manage_package_manager_versions": "false",
            "COREPACK_ENABLE_STRICT": "0",
            "VBUILD_CACHE_DIR": os.path.join(work, "vbuild-store"),
        }
        self.tools = [make_tool(name, args, self.ws, self.env) for name in args.tools]

    def run(self, tool, label):
        log = os.path.join(self.work, f"{tool.name}-{label}.log")
        code, wall, cpu, rss = measure(tool.argv, self.ws, self.env, log)
        if code != 0:
            raise RuntimeError(f"{tool.name} exited {code} ({label}); {log}:\n{tail(log)}")
        return wall, cpu, rss, log

    def prepare(self, tool, scenario):
        if scenario == "cold":
            self.space.clean_outputs()
            for d in tool.cache_dirs:
                rm(d)
            return
        # The tool's own untimed run: cache warm, outputs as it leaves them.
        self.run(tool, f"{scenario}-prep")
        if scenario == "restore":
            self.space.clean_outputs()
        elif scenario == "leaf":
            self.space.edit_leaf()

    def setup(self):
        os.makedirs(self.work, exist_ok=True)
        no_pnpm = self.space.setup(self.args.vbuild, "nx" in self.args.tools)
        # The repo's own runner is read from the copied checkout.
        self.tools = [make_tool(t.name, self.args, self.ws, self.env) if t.name == "own" else t for t in self.tools]
        for t in self.tools:
            if t.name == "own" and t.argv:
                # Scripts that call the manager again (`pnpm --filter …`)
                # get the same one, not bench's.
                self.env["PATH"] = os.pathsep.join([os.path.dirname(t.argv[0]), self.env["PATH"]])
        for tool in self.tools:
            if tool.name != "vbuild" and not tool.error:
                if no_pnpm:
                    tool.error = no_pnpm
                elif tool.name == "nx" and self.space.nx_error:
                    tool.error = self.space.nx_error
                elif tool.name == "turbo" and not os.path.exists(os.path.join(self.ws, "turbo.json")):
                    tool.error = "no turbo.json in this workspace"
                elif tool.name == "nx" and not os.path.exists(os.path.join(self.ws, "nx.json")):
                    tool.error = "no nx.json in this workspace"

    def go(self):
        self.setup()
        results = {}  # (scenario, tool) -> list of (wall, cpu, rss)
        for scenario in self.args.scenarios:
            runs = self.cold_runs if scenario == "cold" and self.cold_runs else self.args.runs
            for r in range(runs):
                for tool in self.tools:
                    if tool.error:
                        continue
                    try:
                        self.prepare(tool, scenario)
                        wall, cpu, rss, log = self.run(tool, f"{scenario}-{r}")
                        self.space.learn_outputs()
                        bad = self.space.check_outputs()
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
                        f"# {self.space.title} {scenario:8} run {r + 1} {tool.name:7} "
                        f"wall {wall:7.3f}s cpu {cpu:7.3f}s rss {rss / 1024:6.1f}MiB",
                        file=sys.stderr,
                    )
        self.space.reset()
        return results


def med(samples, i):
    return statistics.median(s[i] for s in samples)


def fmt_ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def medians(results, names):
    """(scenario, tool) -> (wall, cpu, rss MiB, runs)."""
    return {
        (sc, t): (med(s, 0), med(s, 1), med(s, 2) / 1024, len(s))
        for (sc, t), s in results.items()
        if t in names
    }


def table(title, tools, results):
    names = [t.name for t in tools if (any((sc, t.name) in results for sc in SCENARIOS))]
    stats = medians(results, names)
    head = ["workspace", "scenario", "runs"]
    for t in names:
        head += [f"{t} wall", f"{t} cpu", f"{t} rss"]
    peers = [p for p in PEERS if p in names and "vbuild" in names]
    for peer in peers:
        head += [f"wall vb/{peer}", f"cpu vb/{peer}", f"rss vb/{peer}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario in SCENARIOS:
        if not any((scenario, t) in stats for t in names):
            continue
        runs = max(stats[(scenario, t)][3] for t in names if (scenario, t) in stats)
        row = [title, scenario, str(runs)]
        for t in names:
            v = stats.get((scenario, t))
            row += [f"{v[0]:.3f} s", f"{v[1]:.3f} s", f"{v[2]:.0f} MiB"] if v else ["n/a"] * 3
        for peer in peers:
            v, p = stats.get((scenario, "vbuild")), stats.get((scenario, peer))
            for i in range(3):
                row.append(fmt_ratio(v[i] if v else None, p[i] if p else None))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def targets_table(rows):
    """rows: (title, n, results). The issue's targets, wall ratios."""
    lines = ["| workspace | target | ratio | met |", "|---|---|---|---|"]
    for title, n, results in rows:
        stats = medians(results, TOOLS + ["pnpm", "own"])
        for (scenario, peer), (t200, t1000) in TARGETS.items():
            v, p = stats.get((scenario, "vbuild")), stats.get((scenario, peer))
            goal = t1000 if n and n >= 1000 else t200
            if not v or not p:
                continue
            ratio = v[0] / p[0]
            lines.append(f"| {title} | {scenario} vs {peer} ≤ {goal}× | {ratio:.2f} | {'yes' if ratio <= goal else '**no**'} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=gen_modes(), default="migrate")
    ap.add_argument("--real", help="measure this checkout (dependencies installed) instead of generated ones")
    ap.add_argument("--leaf", help="with --real: the file the leaf scenario edits (workspace-relative)")
    ap.add_argument("--task", default="build", help="with --real: the task every tool runs (default build)")
    ap.add_argument("--sizes", default="200,1000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cold-runs", help="runs of `cold` (default: --runs); a comma list gives one per size")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--vbuild", default=os.path.join(REPO, "target", "release", "vbuild"))
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "vbuild-bench"))
    ap.add_argument("--json", help="also write the raw samples here")
    ap.add_argument("--require-peers", action="store_true", help="fail if a peer cannot run")
    args = ap.parse_args()
    if args.real and args.tools == ",".join(TOOLS):
        # A real repo: its own build script and the runners it configures.
        args.tools = "vbuild,own,turbo,nx"
    args.tools = args.tools.split(",")
    args.scenarios = [s for s in SCENARIOS if s in args.scenarios.split(",")]
    if args.real and not args.leaf:
        args.scenarios = [s for s in args.scenarios if s != "leaf"]
    args.vbuild = os.path.abspath(args.vbuild)
    if not os.access(args.vbuild, os.X_OK):
        sys.exit(f"no vbuild binary at {args.vbuild} (cargo build --release -p vbuild, or --vbuild)")

    home = tempfile.mkdtemp(prefix="vbuild-bench-home-")
    tables, raw, notes, rows = [], {}, [], []
    started = time.time()
    try:
        if args.real:
            work = os.path.join(args.workdir, "real-" + os.path.basename(os.path.abspath(args.real).rstrip("/")))
            spaces = [(None, workspaces.Real(args.real, work, args.leaf), work)]
        else:
            spaces = []
            for n in [int(s) for s in args.sizes.split(",")]:
                work = os.path.join(args.workdir, f"{args.mode}-n{n}")
                spaces.append((n, workspaces.Generated(n, args.mode, work, args.seed), work))
        cold = [int(c) for c in args.cold_runs.split(",")] if args.cold_runs else []
        for k, (n, space, work) in enumerate(spaces):
            bench = Bench(args, space, work, home, cold[min(k, len(cold) - 1)] if cold else None)
            results = bench.go()
            tables.append(table(space.title, bench.tools, results))
            rows.append((space.title, n, results))
            raw[space.title] = {f"{s}/{t}": v for (s, t), v in results.items()}
            for t in bench.tools:
                if getattr(t, "what", None):
                    notes.append(f"{space.title}: {t.name} = {t.what}")
                if t.error:
                    notes.append(f"{space.title}: {t.name} not measured: {t.error.splitlines()[0]}")
    finally:
        shutil.rmtree(home, ignore_errors=True)

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"Machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}")
    print(f"Command: {' '.join(['python3', 'bench/run.py'] + sys.argv[1:])} ({time.time() - started:.0f} s)")
    print("Medians; wall, CPU (user+sys, with reaped descendants) and peak RSS; ratios are vbuild / peer.\n")
    for t in tables:
        print(t + "\n")
    if args.mode == "migrate" or args.real:
        print(targets_table(rows) + "\n")
    for note in notes:
        print(f"NOTE: {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)


def gen_modes():
    return workspaces.gen_workspace.MODES


if __name__ == "__main__":
    main()
