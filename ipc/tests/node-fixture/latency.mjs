// Per-call latency of getEnv through the real package and vbuild's Node
// client. Run under a vbuild IPC server (ipc/examples/latency.rs does that).
import { getEnv } from '@voidzero-dev/vite-task-client';

const n = Number(process.argv[2] ?? 10000);
let t0 = process.hrtime.bigint();
getEnv('VBUILD_BENCH_VAR', { tracked: false }); // includes worker start + connect
const first = Number(process.hrtime.bigint() - t0) / 1e3;
for (let i = 0; i < 200; i++) getEnv('VBUILD_BENCH_VAR', { tracked: false });
const samples = new Float64Array(n);
for (let i = 0; i < n; i++) {
  t0 = process.hrtime.bigint();
  getEnv('VBUILD_BENCH_VAR', { tracked: false });
  samples[i] = Number(process.hrtime.bigint() - t0) / 1e3;
}
samples.sort();
const mean = samples.reduce((a, b) => a + b, 0) / n;
const pct = (p) => samples[Math.min(n - 1, Math.floor(n * p))].toFixed(1);
console.log(
  `node getEnv: first call ${first.toFixed(0)} us (worker start + connect); ` +
    `${n} calls: mean ${mean.toFixed(1)} us, p50 ${pct(0.5)} us, p99 ${pct(0.99)} us`,
);
