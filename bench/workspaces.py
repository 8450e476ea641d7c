"""The workspaces bench/run.py measures on.

  Generated   gen_workspace.py's N packages, `pnpm install`ed (workspace
              links only: no registry needed). mode `migrate` (the users'
              path): no BUILD.toml files; `vbuild migrate` writes them and
              vbuild.toml (node_modules = true). mode `hand`: hand-written
              BUILD.toml files, no node_modules staged.
  Real        a checkout with its dependencies installed, copied into the
              work directory; migrated unless it has a vbuild.toml.

Each knows its outputs (to delete them for `cold` and `restore`), how to
check them after a run, and how to make the `leaf` edit.
"""
import os
import shutil
import subprocess
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import gen_workspace  # noqa: E402

NM = os.path.join(BENCH, "node_modules")
# Never outputs, whatever git ignores.
NOT_OUTPUTS = {"node_modules", ".git", ".turbo", ".nx", ".vbuild", ".vite", ".cache", ".pnpm-store"}


def rm(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def git(ws, *args, capture=False):
    cmd = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args]
    if capture:
        return subprocess.run(cmd, cwd=ws, check=True, capture_output=True, text=True).stdout
    subprocess.run(cmd, cwd=ws, check=True, stdout=subprocess.DEVNULL)


def migrate(ws, vbuild):
    """`vbuild migrate --force`, committed, so `git checkout` keeps it."""
    out = subprocess.run([vbuild, "migrate", "--force"], cwd=ws, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"vbuild migrate failed in {ws}:\n{out.stdout}{out.stderr}")
    git(ws, "add", "-A")
    if git(ws, "status", "--porcelain", capture=True).strip():
        git(ws, "commit", "-q", "-m", "vbuild migrate")


def link_nx(ws):
    """nx must be resolvable from the workspace: link bench's copy into
    node_modules (ignored by git) and give nx the pnpm state file it looks
    for (pnpm 10 no longer writes .modules.yaml for a dependency-less root)."""
    nx = os.path.join(NM, "nx")
    if not os.path.isdir(nx):
        return "nx not installed under bench/node_modules (run `npm install` in bench/)"
    link = os.path.join(ws, "node_modules", "nx")
    if not os.path.lexists(link):
        os.symlink(nx, link)
    modules = os.path.join(ws, "node_modules", ".modules.yaml")
    if not os.path.exists(modules):
        with open(modules, "w") as f:
            f.write(f"layoutVersion: 5\nnodeLinker: isolated\npackageManager: pnpm@{gen_workspace.PNPM_VERSION}\n")
    return None


class Generated:
    def __init__(self, n, mode, work, seed):
        self.n, self.mode, self.seed = n, mode, seed
        self.ws = os.path.join(work, "ws")
        self.stamp = os.path.join(work, "generated")
        self.leaf = gen_workspace.leaf(n, seed)
        self.leaf_src = os.path.join(self.ws, "packages", f"p{self.leaf:04d}", "src", "f0.js")
        self.edits = 0
        self.title = f"N={n} ({mode})"

    def setup(self, vbuild, want_nx):
        """Generates (or reuses) the workspace; returns why pnpm-based peers
        cannot run, or None."""
        pnpm = os.path.join(NM, ".bin", "pnpm")
        install = os.path.exists(pnpm)
        want = f"{self.n} {self.seed} {self.mode} {gen_workspace.PNPM_VERSION}" + ("" if install else " no-install")
        have = open(self.stamp).read() if os.path.exists(self.stamp) else ""
        if have != want or not os.path.isdir(self.ws):
            if self.mode == "migrate" and not install:
                raise SystemExit("the migrate mode needs pnpm: run `npm install` in bench/")
            print(f"# generating {self.title} in {self.ws}", file=sys.stderr)
            gen_workspace.generate(self.n, self.ws, self.seed, install=install, pnpm=pnpm, mode=self.mode)
            with open(self.stamp, "w") as f:
                f.write(want)
        git(self.ws, "checkout", "-q", "--", ".")
        if self.mode == "migrate":
            # Never built, as a fresh clone: turbo's outputs become
            # optional_outs without a native build first.
            migrate(self.ws, vbuild)
        self.clean_outputs()
        self.nx_error = link_nx(self.ws) if want_nx and install else None
        return None if install else "pnpm not installed under bench/node_modules (run `npm install` in bench/)"

    def dists(self):
        return [os.path.join(self.ws, "packages", f"p{i:04d}", "dist") for i in range(self.n)]

    def clean_outputs(self):
        for d in self.dists():
            rm(d)

    def learn_outputs(self):
        pass

    def check_outputs(self):
        missing = [d for d in self.dists() if not os.path.isfile(os.path.join(d, "out.js"))]
        if missing:
            return f"{len(missing)} dist/out.js missing (first: {os.path.relpath(missing[0], self.ws)})"
        if self.edits:
            with open(os.path.join(self.dists()[self.leaf], "out.js")) as f:
                if f"edit {self.edits}" not in f.read():
                    return f"leaf output does not reflect edit {self.edits}"
        return None

    def edit_leaf(self):
        self.edits += 1
        with open(self.leaf_src) as f:
            text = f.read().split("// edit ")[0]
        with open(self.leaf_src, "w") as f:
            f.write(f"{text}// edit {self.edits}\n")

    def reset(self):
        git(self.ws, "checkout", "-q", "--", ".")


class Real:
    """A real checkout (dependencies installed). Outputs are learned: what
    git does not track after the first build, minus NOT_OUTPUTS; `--leaf FILE`
    names the file the leaf scenario edits (appending a comment line)."""

    def __init__(self, src, work, leaf):
        self.src = os.path.abspath(src)
        self.ws = os.path.join(work, "ws")
        self.leaf_rel = leaf
        self.outputs = None
        self.edits = 0
        self.title = os.path.basename(self.src.rstrip("/"))

    def setup(self, vbuild, want_nx):
        if not os.path.isdir(os.path.join(self.src, "node_modules")):
            raise SystemExit(f"--real {self.src}: install its dependencies first (node_modules is missing)")
        print(f"# copying {self.src} to {self.ws}", file=sys.stderr)
        rm(self.ws)
        shutil.copytree(self.src, self.ws, symlinks=True)
        if not os.path.isdir(os.path.join(self.ws, ".git")):
            # A directory inside another checkout (examples/vite-monorepo):
            # a repository of its own, so outputs can be told from sources.
            if not os.path.exists(os.path.join(self.ws, ".gitignore")):
                with open(os.path.join(self.ws, ".gitignore"), "w") as f:
                    f.write("node_modules/\n")
            git(self.ws, "init", "-q", "-b", "main")
            git(self.ws, "add", "-A")
            git(self.ws, "commit", "-q", "-m", "copied")
        git(self.ws, "checkout", "-q", "--", ".")
        if not os.path.exists(os.path.join(self.ws, "vbuild.toml")):
            migrate(self.ws, vbuild)
        self.nx_error = None
        return None

    def ignored(self):
        # What a build added: untracked files, ignored or not.
        out = git(self.ws, "ls-files", "--others", "--ignored", "--exclude-standard", "--directory", capture=True)
        out += git(self.ws, "ls-files", "--others", "--exclude-standard", "--directory", capture=True)
        paths = []
        for line in sorted(set(out.splitlines())):
            rel = line.rstrip("/")
            if not any(part in NOT_OUTPUTS for part in rel.split("/")):
                paths.append(rel)
        return paths

    def learn_outputs(self):
        # Checked: what the first build wrote. Deleted for `cold` and
        # `restore`: what any tool's build wrote (a native `tsc -b` also
        # leaves .tsbuildinfo files, which would make its next cold run warm).
        now = self.ignored()
        if self.outputs is None:
            self.outputs = now
        self.written = sorted(set(getattr(self, "written", [])) | set(now))

    def clean_outputs(self):
        for rel in getattr(self, "written", None) or self.ignored():
            rm(os.path.join(self.ws, rel))

    def check_outputs(self):
        if self.outputs is None:
            return None
        missing = [p for p in self.outputs if not os.path.lexists(os.path.join(self.ws, p))]
        return f"{len(missing)} outputs missing (first: {missing[0]})" if missing else None

    def edit_leaf(self):
        if not self.leaf_rel:
            raise RuntimeError("the leaf scenario of --real needs --leaf FILE")
        self.edits += 1
        with open(os.path.join(self.ws, self.leaf_rel), "a") as f:
            f.write(f"\n// edit {self.edits}\n")

    def reset(self):
        git(self.ws, "checkout", "-q", "--", ".")
