// vite-plugin-vbuild: tells the vbuild runner what a Vite build depends on.
//
// Under vbuild (VP_RUN_NODE_CLIENT_PATH and VBUILD_IPC_SOCKET set) it
// - reads NODE_ENV through the runner, tracked, and applies it: the cache key
//   then holds NODE_ENV's value (or its absence) and nothing else of the
//   caller's environment;
// - reads every variable starting with the config's envPrefix (default
//   VITE_) through the runner, tracked, and exposes it to Vite's loadEnv;
// - ignores Vite's cacheDir as an input and as an output;
// - optionally reports the module graph as the exact inputs used.
// Outside vbuild it does nothing at all.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { getEnv, getEnvs, ignoreInput, ignoreOutput } from "@voidzero-dev/vite-task-client";

// Files whose contents only matter if Vite loaded them (they show up in the
// module graph). Every other staged file (package.json, tsconfig.json, .env,
// public/, lockfiles...) is always reported as used. vbuild itself lets a
// report narrow only the target's own sources: files of other packages
// (shared configs) always count.
const MODULE_EXTS = new Set([
  ".js", ".mjs", ".cjs", ".jsx", ".ts", ".mts", ".cts", ".tsx",
  ".vue", ".svelte", ".astro", ".css", ".scss", ".sass", ".less", ".styl", ".stylus",
]);

function underVbuild() {
  return Boolean(process.env.VP_RUN_NODE_CLIENT_PATH && process.env.VBUILD_IPC_SOCKET);
}

/** vbuild's own client, for its `reportUsedInputs` extension. */
function runner() {
  const p = process.env.VP_RUN_NODE_CLIENT_PATH;
  return p ? createRequire(import.meta.url)(p).load() : null;
}

/** Every file under `root`, skipping node_modules and hidden directories. */
function walk(root, out = []) {
  let entries;
  try {
    entries = fs.readdirSync(root, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = path.join(root, e.name);
    if (e.isDirectory()) {
      if (e.name !== "node_modules" && !e.name.startsWith(".")) walk(p, out);
    } else {
      out.push(p);
    }
  }
  return out;
}

function isInside(dir, file) {
  const rel = path.relative(dir, file);
  return rel !== "" && !rel.startsWith("..") && !path.isAbsolute(rel);
}

export default function vbuild(options = {}) {
  if (!underVbuild()) return { name: "vbuild" };
  const report =
    options.reportUsedInputs ?? process.env.VBUILD_VITE_REPORT_INPUTS === "1";
  let resolved = null;
  let command = "build";
  return {
    name: "vbuild",
    enforce: "pre",
    config(config, env) {
      command = env.command;
      if (env.command === "build") {
        // Tracked: flipping NODE_ENV is a different build, and flipping it
        // back finds the earlier entry again.
        const nodeEnv = getEnv("NODE_ENV");
        if (nodeEnv !== undefined) process.env.NODE_ENV = nodeEnv;
      }
      const prefixes = [].concat(config.envPrefix ?? "VITE_");
      for (const prefix of prefixes) {
        for (const [name, value] of Object.entries(getEnvs({ prefix }))) {
          if (process.env[name] === undefined) process.env[name] = value;
        }
      }
    },
    configResolved(config) {
      resolved = config;
      // Vite's dependency cache is a cache: never an input, never an output.
      ignoreInput(config.cacheDir);
      ignoreOutput(config.cacheDir);
    },
    buildEnd(error) {
      if (error || !report || command !== "build" || resolved === null) return;
      const wsRoot = process.env.VBUILD_WS_ROOT;
      if (!wsRoot) return;
      const used = new Set();
      for (const id of this.getModuleIds()) {
        if (id.startsWith("\0")) continue;
        const file = id.split("?")[0];
        if (path.isAbsolute(file) && isInside(wsRoot, file) && !file.includes("/node_modules/")) {
          used.add(file);
        }
      }
      // A module file is reported unused only beside a file the bundle
      // reached (an unimported sibling in src/). Elsewhere it may have been
      // read while the config loaded (a helper it required at runtime, a
      // postcss or tailwind config), which the module graph does not show.
      const graphDirs = new Set([...used].map((f) => path.dirname(f)));
      for (const dep of resolved.configFileDependencies ?? []) {
        if (isInside(wsRoot, dep)) used.add(dep);
      }
      if (resolved.configFile) used.add(resolved.configFile);
      for (const file of walk(wsRoot)) {
        if (!MODULE_EXTS.has(path.extname(file)) || !graphDirs.has(path.dirname(file))) {
          used.add(file);
        }
      }
      runner()?.reportUsedInputs?.([...used].sort());
    },
  };
}
