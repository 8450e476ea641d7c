#!/usr/bin/env python3
"""Validates the example workspaces' TOML files against the JSON Schemas here,
and checks that a few bad files are rejected. Needs Python >= 3.11 (tomllib)
and the `jsonschema` package; not part of CI.

    python3 schema/json/check.py
"""
import json
import pathlib
import sys
import tomllib

import jsonschema

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def validator(name):
    schema = json.loads((HERE / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def main():
    build, workspace = validator("build.schema.json"), validator("vbuild.schema.json")
    failures = 0
    files = sorted((ROOT / "examples").rglob("*.toml"))
    for path in files:
        if "node_modules" in path.parts:
            continue
        if path.name == "BUILD.toml":
            v = build
        elif path.name == "vbuild.toml":
            v = workspace
        else:
            continue
        errors = list(v.iter_errors(tomllib.loads(path.read_text())))
        for e in errors:
            print(f"{path.relative_to(ROOT)}: {e.json_path}: {e.message}")
        failures += bool(errors)
    bad_build = [
        'target.build.comand = "x"',                      # unknown field
        'target.build.outs = ["a"]',                      # no command, no srcs
        'target.build.srcs = ["a"]\ntarget.build.outs = ["b"]',  # file group with outs
        'target.build.command = "x"\ntarget.build.cache = "sometimes"',
        'target.build.command = []',                      # empty argv
        'target.build.command = 42',                      # wrong type
        'target.build.command = "x"\ntarget.build.sandbox = "docker"',
        'target.build.command = "x"\ntarget.build.timeout = "10 minutes"',
        'target."my build".command = "x"',                # bad target name
        'other = 1',                                      # unknown top-level key
    ]
    bad_workspace = ['workspace.nam = "x"', 'workspace.name = "x"\nworkspace.sandbox = "strict"', 'x = 1']
    for v, docs in ((build, bad_build), (workspace, bad_workspace)):
        for doc in docs:
            if v.is_valid(tomllib.loads(doc)):
                print(f"accepted but should be rejected: {doc!r}")
                failures += 1
    print(f"{len(files)} example files checked, {failures} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
