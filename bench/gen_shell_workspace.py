#!/usr/bin/env python3
"""Generates a vbuild workspace of N packages with shell-command targets.

Each package has five small source files and a `build` target that
concatenates them with its deps' outputs into out/out.txt. Each package
depends on 0 to 3 earlier packages (seeded, so the graph is reproducible).

usage: gen_shell_workspace.py N DIR [--seed S]
"""
import argparse
import os
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("dir")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.dir, exist_ok=True)
    with open(os.path.join(args.dir, "vbuild.toml"), "w") as f:
        f.write(f'[workspace]\nname = "gen-{args.n}"\n')
    for i in range(args.n):
        pkg = os.path.join(args.dir, "packages", f"p{i:04d}")
        os.makedirs(os.path.join(pkg, "src"), exist_ok=True)
        for j in range(5):
            with open(os.path.join(pkg, "src", f"f{j}.txt"), "w") as f:
                f.write(f"package {i} file {j}\n")
        deps = sorted(rng.sample(range(i), min(i, rng.randint(0, 3))))
        dep_labels = ", ".join(f'"//packages/p{d:04d}:build"' for d in deps)
        dep_files = " ".join(f"../p{d:04d}/out/out.txt" for d in deps)
        with open(os.path.join(pkg, "BUILD.toml"), "w") as f:
            f.write(
                "[target.build]\n"
                f'command = "mkdir -p out && cat src/*.txt {dep_files} > out/out.txt"\n'
                'srcs = ["src/**"]\n'
                f"deps = [{dep_labels}]\n"
                'outs = ["out/"]\n'
            )


if __name__ == "__main__":
    main()
