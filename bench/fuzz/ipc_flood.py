#!/usr/bin/env python3
"""Floods a running action's IPC server with hostile frames (issue 14).

Starts `vbuild run` on a temporary workspace whose one target runs this
script again (`--inner`): inside the action, it opens many connections to
$VBUILD_IPC_SOCKET and sends mutated, truncated, oversized, garbage and
slow (byte-by-byte) frames, valid requests among them, reconnecting when
the server closes a connection. Meanwhile the outer process samples
vbuild's peak RSS (VmHWM). Reported: frames sent, connections, answers,
server-side closes, crashes (vbuild died or exited abnormally), hangs (a
request on a healthy connection unanswered for 10 s, or the final probe
failing), peak RSS.

    python3 bench/fuzz/ipc_flood.py --vbuild target/release/vbuild --frames 1000000
"""
import argparse, json, os, random, socket, struct, subprocess, sys, tempfile, threading, time

MAX_FRAME = 1 << 20


def frame(obj):
    body = json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack("<I", len(body)) + body


def requests(rng):
    pick = rng.random()
    text = lambda: rng.choice(["a", "*", "{a,b}", "[", "..", "/", "VITE_", "\u00e9"]) * rng.choice([1, 3, 50, 2000])
    if pick < 0.2:
        return {"op": "getEnv", "name": rng.choice(["PRESENT", "VBUILD_CACHE_DIR", text()]), "tracked": rng.random() < 0.5}
    if pick < 0.4:
        return {"op": "getEnvs", "query": {rng.choice(["glob", "prefix"]): text()}}
    if pick < 0.6:
        return {"op": "ignoreInput", "path": text(), "cwd": os.getcwd()}
    if pick < 0.7:
        return {"op": "ignoreOutput", "path": "/etc/" + text()}
    if pick < 0.8:
        return {"op": "reportUsedInputs", "paths": [text() for _ in range(rng.randint(0, 20))], "cwd": os.getcwd()}
    if pick < 0.85:
        return {"op": rng.choice(["teleport", "hello", "disableCache"]), "x": text()}
    return {"op": "getEnv", "name": "PRESENT"}


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        i = rng.randrange(len(data))
        data[i] = rng.randrange(256)
    return bytes(data)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.frames = self.conns = self.answers = self.closed = self.hangs = 0
        self.max_wait = 0.0

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


def connect(path, token, hello=True, good_token=True):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    if hello:
        s.sendall(frame({"op": "hello", "version": 1, "token": token if good_token else "0" * 64}))
    return s


def drain(s, stats):
    """Counts answers until the server closes the connection."""
    buf = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 4:
                (n,) = struct.unpack("<I", buf[:4])
                if len(buf) < 4 + n:
                    break
                buf = buf[4 + n:]
                stats.add(answers=1)
    except OSError:
        pass
    stats.add(closed=1)


def worker(wid, path, token, quota, stats, deadline):
    rng = random.Random(wid)
    sent = 0
    while sent < quota and time.time() < deadline:
        kind = rng.random()
        try:
            s = connect(path, token, hello=kind > 0.02, good_token=kind > 0.05)
        except OSError:
            time.sleep(0.01)  # over the connection bound, or the backlog
            continue
        stats.add(conns=1)
        rude = rng.random() < 0.05  # never reads its answers
        # Most connections are tools with the odd bad frame; some are hostile.
        bad = 0.002 if rng.random() < 0.7 else 0.2
        reader = None
        if not rude:
            reader = threading.Thread(target=drain, args=(s, stats), daemon=True)
            reader.start()
        try:
            batch = []
            for _ in range(rng.randint(1, 400)):
                r = rng.random() / bad * 0.2
                f = frame(requests(rng))
                if r < 0.15:
                    f = mutate(rng, f)  # broken JSON or lengths: the server closes
                elif r < 0.18:
                    f = f[: rng.randrange(1, len(f))]  # truncated
                elif r < 0.19:
                    f = struct.pack("<I", rng.choice([MAX_FRAME + 1, 0xFFFFFFFF])) + b"x" * rng.randrange(64)
                elif r < 0.20:
                    f = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))  # garbage
                batch.append(f)
                sent += 1
            data = b"".join(batch)
            if rng.random() < 0.01:
                for b in data[:200]:  # slow: a byte at a time
                    s.send(bytes([b]))
                    time.sleep(0.001)
            else:
                s.sendall(data)
        except OSError:
            pass
        stats.add(frames=len(batch))
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if reader:
            reader.join(timeout=10)
            if reader.is_alive():
                stats.add(hangs=1)
        s.close()


def probe(path, token):
    """A fresh, well-behaved connection must still be answered promptly."""
    t = time.time()
    s = connect(path, token)
    s.settimeout(10)
    s.sendall(frame({"op": "getEnv", "name": "PRESENT", "tracked": False}))
    got = b""
    while len(got) < 4 or len(got) < 4 + struct.unpack("<I", got[:4])[0]:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed")
        got += chunk
    (n,) = struct.unpack("<I", got[:4])
    rest = got[4 + n:]
    while len(rest) < 4 or len(rest) < 4 + struct.unpack("<I", rest[:4])[0]:
        rest += s.recv(65536)
    answer = json.loads(rest[4:4 + struct.unpack("<I", rest[:4])[0]])
    return answer, time.time() - t


def inner(args):
    path, token = os.environ["VBUILD_IPC_SOCKET"], os.environ.get("VBUILD_IPC_TOKEN", "")
    stats = Stats()
    deadline = time.time() + args.seconds
    threads = [threading.Thread(target=worker, args=(i, path, token, args.frames // args.conns + 1, stats, deadline)) for i in range(args.conns)]
    t = time.time()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    try:
        answer, took = probe(path, token)
        probe_ok = answer == {"type": "env", "value": "yes"}
    except OSError as e:
        answer, took, probe_ok = str(e), -1, False
    report = {"frames": stats.frames, "connections": stats.conns, "answers": stats.answers,
              "closed_by_server": stats.closed, "hangs": stats.hangs + (0 if probe_ok else 1),
              "probe": answer, "probe_seconds": round(took, 3), "seconds": round(time.time() - t, 1)}
    with open(args.report, "w") as f:
        json.dump(report, f)


def outer(args):
    work = tempfile.mkdtemp(prefix="ipc-flood-")
    ws = os.path.join(work, "ws")
    os.makedirs(os.path.join(ws, "p"))
    report = os.path.join(work, "report.json")
    with open(os.path.join(ws, "vbuild.toml"), "w") as f:
        f.write('[workspace]\nname = "flood"\nsandbox = "scratch"\n')
    cmd = [sys.executable, os.path.abspath(__file__), "--inner", "--frames", str(args.frames),
           "--conns", str(args.conns), "--seconds", str(args.seconds), "--report", report]
    with open(os.path.join(ws, "p", "BUILD.toml"), "w") as f:
        f.write("[target.flood]\ncommand = %s\ncache = false\n" % json.dumps(cmd))
    env = dict(os.environ, VBUILD_CACHE_DIR=os.path.join(work, "cache"), PRESENT="yes")
    t = time.time()
    proc = subprocess.Popen([os.path.abspath(args.vbuild), "run", "//p:flood"], cwd=ws, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            with open("/proc/%d/status" % proc.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    out, err = proc.communicate()
    result = json.load(open(report)) if os.path.exists(report) else {}
    result.update({"vbuild_exit": proc.returncode, "vbuild_crashed": proc.returncode not in (0, 1),
                   "peak_rss_mib": round(peak / 1024, 1), "wall_seconds": round(time.time() - t, 1),
                   "warnings": [l[:200] for l in err.splitlines() if "warning" in l][:10],
                   "stderr_bytes": len(err)})
    print(json.dumps(result, indent=2))
    ok = result.get("hangs", 1) == 0 and not result["vbuild_crashed"] and result.get("frames", 0) > 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--vbuild", default="target/debug/vbuild")
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--inner", action="store_true")
    p.add_argument("--report")
    a = p.parse_args()
    inner(a) if a.inner else outer(a)
