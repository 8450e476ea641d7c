// A tool stand-in for ipc/tests/node.rs: runs the calls named on the
// command line through the REAL @voidzero-dev/vite-task-client package,
// printing one JSON line per call. Same command names as
// ipc/examples/ipc_probe.rs, plus `child=a;b` (run this script again as a
// child process with those commands) and `exit` (process.exit(0) at once).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as client from '@voidzero-dev/vite-task-client';

// reportUsedInputs is a vbuild extension the package does not wrap.
function raw() {
  const p = process.env.VP_RUN_NODE_CLIENT_PATH;
  return p ? createRequire(import.meta.url)(p).load() : null;
}

const commands = {
  'ignore-input': (a) => client.ignoreInput(a),
  'ignore-output': (a) => client.ignoreOutput(a),
  'disable-cache': () => client.disableCache(),
  'get-env': (a) => client.getEnv(a),
  'get-env-tracked-false': (a) => client.getEnv(a, { tracked: false }),
  'get-env-tracked-true': (a) => client.getEnv(a, { tracked: true }),
  'get-envs': (a) => client.getEnvs(a),
  'get-envs-prefix': (a) => client.getEnvs({ prefix: a }),
  'get-envs-untracked': (a) => client.getEnvs(a, { tracked: false }),
  'report-used': (a) => raw()?.reportUsedInputs(a.split(',')),
  cd: (a) => process.chdir(a),
  child: (a) => {
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), ...a.split(';')], {
      stdio: 'inherit',
    });
    return r.status;
  },
};

for (const spec of process.argv.slice(2)) {
  if (spec === 'exit') process.exit(0);
  const i = spec.indexOf('=');
  const [cmd, arg] = i < 0 ? [spec, ''] : [spec.slice(0, i), spec.slice(i + 1)];
  let line;
  try {
    const ok = commands[cmd](arg);
    // undefined is not JSON: report it explicitly so tests can tell it from null.
    line = ok === undefined ? { cmd, undefined: true } : { cmd, ok };
  } catch (e) {
    line = { cmd, err: String(e && e.message) };
  }
  process.stdout.write(JSON.stringify(line) + '\n');
}
