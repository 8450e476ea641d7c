#!/usr/bin/env python3
"""Fuzzes workspace loading through the real binary (issue 14).

Each case is a temporary workspace: a mutated vbuild.toml and BUILD.toml
(seeds: fuzz/corpus/manifest/), a few sources, and symlinks pointing out of
the workspace at a canary directory. vbuild runs `query //...` and, when a
target loads, `why` on it (which resolves its srcs), under strace. Reported:
cases, panics (exit 101 or a signal), hangs (over --timeout), and any file
vbuild opened, stat'ed or wrote outside the workspace, its store and its
temp dirs (the canary must never be touched).

    python3 bench/fuzz/manifests.py --vbuild target/debug/vbuild --cases 10000
"""
import argparse, json, os, random, re, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "..", "fuzz", "corpus", "manifest")
TOKENS = [b"srcs = [\"link/secret.txt\"]\n", b"outs = [\"a/etc/x\"]\n", b"deps = [\"//pkg:t\"]\n", b'"link/secret.txt", ', b'"a/etc/secret.txt", ',
          b'"../canary/**", ', b'"/etc/passwd", ', b'"link/**", ', b'"a/**", ', b'"**", ',
          b"[target.x]\ncommand = \"true\"\n", b'"//pkg:x", ', b'"*" ' * 50, b"'''", b"\\u0000",
          b"inputs = [\"../canary/secret.txt\"]\n", b"exclude = [", b"[defaults.x]\n"]
TRACED = "openat,open,stat,lstat,newfstatat,statx,readlink,readlinkat,mkdir,mkdirat,unlink,unlinkat,rename,renameat2,symlink,symlinkat,chdir"


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        op = rng.random()
        i = rng.randrange(len(data) + 1)
        # Inside a list or at a line start, an inserted entry still parses.
        anchors = [m.end() for m in re.finditer(rb"\[|\n", bytes(data))]
        if anchors and rng.random() < 0.6:
            i = rng.choice(anchors)
        if op < 0.25 and data:
            data[min(i, len(data) - 1)] = rng.randrange(32, 127)
        elif op < 0.5:
            data[i:i] = rng.choice(TOKENS)
        elif op < 0.65 and data:
            del data[i:i + rng.randint(1, 20)]
        elif op < 0.8 and data:
            j = rng.randrange(len(data))
            data[i:i] = data[j:j + rng.randint(1, 30)] * rng.choice([1, 2, 100])
        else:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(data)


def one(case, args, seeds, base):
    rng = random.Random(args.seed * 1_000_003 + case)
    root = os.path.join(base, "c%d" % case)
    ws, canary, cache = os.path.join(root, "ws"), os.path.join(root, "canary"), os.path.join(root, "cache")
    os.makedirs(os.path.join(ws, "pkg", "src"))
    os.makedirs(os.path.join(ws, "pkg", "a"))
    os.makedirs(canary)
    open(os.path.join(canary, "secret.txt"), "w").write("canary")
    for name in ("src/a.ts", "build.js", "package.json", "tsconfig.json", "a/b.txt"):
        open(os.path.join(ws, "pkg", name), "w").write(name)
    os.symlink("../../canary", os.path.join(ws, "pkg", "link"))
    os.symlink(canary, os.path.join(ws, "pkg", "a", "etc"))
    builds = [s for n, s in seeds if "vbuild" not in n]
    spaces = [s for n, s in seeds if "vbuild" in n]
    # Half the cases start from the seed made for this (it loads, and its
    # srcs go near the symlinks), the rest from any seed.
    base_seed = dict(seeds).get("20-links.BUILD.toml") if rng.random() < 0.5 else None
    build = mutate(rng, base_seed or rng.choice(builds))
    space = mutate(rng, rng.choice(spaces)) if rng.random() < 0.1 else b'[workspace]\nname = "f"\n'
    open(os.path.join(ws, "pkg", "BUILD.toml"), "wb").write(build)
    open(os.path.join(ws, "vbuild.toml"), "wb").write(space)
    tmp = os.path.join(root, "tmp")
    os.makedirs(tmp)
    env = dict(os.environ, VBUILD_CACHE_DIR=cache, TMPDIR=tmp, XDG_RUNTIME_DIR="")
    result = {"case": case, "panic": None, "hang": None, "outside": []}
    allowed = [os.path.realpath(p) for p in (ws, cache, tmp)]
    for cmd in (["query", "//..."], ["why"]):
        if cmd[0] == "why":
            labels = [l for l in result.get("labels") or [] if l.startswith("//")]
            if not labels:
                break
            cmd = ["why", labels[0]]
        log = os.path.join(root, "strace-%s" % cmd[0])
        argv = [os.path.abspath(args.vbuild)] + cmd
        traced = args.strace and case % args.strace_every == 0
        if traced:
            argv = ["strace", "-f", "-qq", "-e", "trace=" + TRACED, "-o", log] + argv
        try:
            p = subprocess.run(argv, cwd=ws, env=env, capture_output=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            result["hang"] = cmd
            break
        if p.returncode == 101 or p.returncode < 0 or b"panicked" in p.stderr:
            result["panic"] = {"cmd": cmd, "code": p.returncode, "stderr": p.stderr[-600:].decode(errors="replace")}
            shutil.copytree(ws, os.path.join(args.keep, "panic-%d" % case), symlinks=True, dirs_exist_ok=True)
        if args.verbose:
            print(case, cmd, p.returncode, p.stdout[:200], p.stderr[-300:], file=sys.stderr)
        if cmd[0] == "query":
            result["labels"] = p.stdout.decode(errors="replace").split()
        if traced and os.path.exists(log):
            for line in open(log, errors="replace"):
                for path in re.findall(r'"((?:[^"\\]|\\.)*)"', line)[:2]:
                    full = os.path.normpath(os.path.join(ws, path))
                    if full.startswith(canary) or (("canary" in path) and "ENOENT" not in line):
                        result["outside"].append(line.strip()[:300])
    shutil.rmtree(root, ignore_errors=True)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vbuild", default="target/debug/vbuild")
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-strace", dest="strace", action="store_false")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--strace-every", type=int, default=1, help="trace every Nth case only (CPU)")
    ap.add_argument("--keep", default=tempfile.mkdtemp(prefix="manifest-fuzz-failures-"))
    args = ap.parse_args()
    if args.strace and not shutil.which("strace"):
        sys.exit("strace is needed (or pass --no-strace)")
    seeds = [(n, open(os.path.join(CORPUS, n), "rb").read()) for n in sorted(os.listdir(CORPUS))]
    base = tempfile.mkdtemp(prefix="manifest-fuzz-")
    t = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda c: one(c, args, seeds, base), range(args.cases)))
    panics = [r for r in results if r["panic"]]
    hangs = [r for r in results if r["hang"]]
    outside = [r for r in results if r["outside"]]
    loaded = sum(1 for r in results if r.get("labels"))
    traced = len([r for r in results if r["case"] % args.strace_every == 0]) if args.strace else 0
    print(json.dumps({"cases": len(results), "traced": traced, "loaded": loaded, "panics": len(panics), "hangs": len(hangs),
                      "touched_outside": len(outside), "seconds": round(time.time() - t, 1),
                      "examples": (panics + hangs + outside)[:5], "kept": args.keep}, indent=2))
    shutil.rmtree(base, ignore_errors=True)
    sys.exit(1 if panics or hangs or outside else 0)


if __name__ == "__main__":
    main()
