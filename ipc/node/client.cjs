'use strict';
// vbuild's Node client for the per-action IPC server.
//
// `@voidzero-dev/vite-task-client` does `require(process.env.VP_RUN_NODE_CLIENT_PATH).load()`
// and expects an object of SYNCHRONOUS methods: ignoreInput, ignoreOutput,
// disableCache, getEnv, getEnvs. vbuild sets that variable to this file.
//
// Node has no synchronous sockets, and this module must work without a
// native build step. So a worker thread owns the socket, and the calling
// thread posts a request and blocks in `Atomics.wait` on a shared flag until
// the worker has put the answer on a MessagePort (the trick `synckit` uses).
// Every call waits for the server's acknowledgement, so once it returns the
// declaration is applied and `process.exit()` right after loses nothing.
//
// Wire format (schema/ipc/protocol.md): u32 little-endian length, then a
// UTF-8 JSON body; first frame `hello`, then one response per request.

const PROTOCOL_VERSION = 1;
const MAX_FRAME_LEN = 1 << 20;
// The server answers in microseconds; this only guards against a wedged
// runner, where an exception beats a tool hung forever.
const CALL_TIMEOUT_MS = 60_000;

// Runs inside the worker thread; serialized with toString(), so it must not
// close over anything from this file.
function workerMain() {
  const { workerData } = require('node:worker_threads');
  const net = require('node:net');
  const { socketPath, token, port, flag, version, maxFrameLen } = workerData;

  let fatal = null; // once set, every request is answered with this error
  let buf = Buffer.alloc(0);
  // Callbacks for answers still owed by the server, in request order.
  const expected = [];

  function reply(id, payload) {
    port.postMessage({ id, ...payload });
    // The message is queued before the flag flips, so the caller's
    // receiveMessageOnPort finds it as soon as it wakes up.
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
  }

  function fail(message) {
    if (fatal === null) fatal = message;
    while (expected.length > 0) expected.shift()({ error: fatal });
    sock.destroy();
  }

  function frame(obj) {
    const body = Buffer.from(JSON.stringify(obj), 'utf8');
    if (body.length > maxFrameLen) return null;
    const header = Buffer.alloc(4);
    header.writeUInt32LE(body.length, 0);
    return Buffer.concat([header, body]);
  }

  const sock = net.createConnection({ path: socketPath });
  sock.on('error', (err) => fail(`cannot talk to vbuild at ${socketPath}: ${err.message}`));
  sock.on('close', () => fail('the vbuild IPC connection was closed'));
  sock.on('data', (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    while (buf.length >= 4) {
      const len = buf.readUInt32LE(0);
      if (len > maxFrameLen) return fail(`oversized frame (${len} bytes) from the server`);
      if (buf.length < 4 + len) break;
      const body = buf.subarray(4, 4 + len).toString('utf8');
      buf = buf.subarray(4 + len);
      let msg;
      try {
        msg = JSON.parse(body);
      } catch (e) {
        return fail(`malformed frame from the server: ${e.message}`);
      }
      const next = expected.shift();
      if (next) next({ response: msg });
    }
  });

  // Writes may be queued before the connection is up; net buffers them.
  // The hello's answer is checked but never forwarded to the caller.
  // The token proves this connection belongs to the action (schema/ipc/protocol.md).
  const hello = { op: 'hello', version, client: `vbuild-node/${process.version}` };
  if (token) hello.token = token;
  sock.write(frame(hello));
  expected.push(({ response, error }) => {
    if (error) return;
    if (!response || response.type !== 'hello') {
      fail(response && response.type === 'error' ? response.message : 'handshake failed');
    }
  });

  port.on('message', ({ id, request }) => {
    if (fatal !== null) return reply(id, { error: fatal });
    const bytes = frame(request);
    if (bytes === null) return reply(id, { error: 'request exceeds the frame size limit' });
    expected.push((answer) => reply(id, answer));
    sock.write(bytes);
  });
}

function createClient(socketPath, token) {
  const { Worker, MessageChannel, receiveMessageOnPort } = require('node:worker_threads');
  const path = require('node:path');
  const { fileURLToPath } = require('node:url');

  let channel = null;
  let nextId = 1;

  function start() {
    const { port1, port2 } = new MessageChannel();
    const flag = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(`(${workerMain.toString()})()`, {
      eval: true,
      workerData: {
        socketPath,
        token,
        port: port2,
        flag,
        version: PROTOCOL_VERSION,
        maxFrameLen: MAX_FRAME_LEN,
      },
      transferList: [port2],
    });
    // Neither the worker nor its port may keep the tool's process alive.
    worker.unref();
    port1.unref();
    return { port: port1, flag };
  }

  function call(request) {
    if (channel === null) channel = start();
    const { port, flag } = channel;
    const id = nextId++;
    Atomics.store(flag, 0, 0);
    port.postMessage({ id, request });
    const deadline = Date.now() + CALL_TIMEOUT_MS;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('vbuild IPC: no answer from the runner within 60s');
      Atomics.wait(flag, 0, 0, left);
      // Skip answers to earlier calls that timed out.
      let msg;
      while ((msg = receiveMessageOnPort(port)) !== undefined) {
        if (msg.message.id === id) {
          const { response, error } = msg.message;
          if (error !== undefined) throw new Error(`vbuild IPC: ${error}`);
          return response;
        }
      }
      Atomics.store(flag, 0, 0);
    }
  }

  function toPath(p, what) {
    if (p instanceof URL) return fileURLToPath(p);
    if (typeof p !== 'string') throw new TypeError(`${what}: path must be a string`);
    return p;
  }

  // Relative paths are resolved by the server against our cwd.
  function pathRequest(op, p) {
    const given = toPath(p, op);
    const req = { op, path: given };
    if (!path.isAbsolute(given)) req.cwd = process.cwd();
    return req;
  }

  function tracked(options) {
    // Same default as vite-task: tracked unless explicitly false.
    if (options === undefined || options === null) return true;
    if (options.tracked === undefined || options.tracked === null) return true;
    return Boolean(options.tracked);
  }

  function errorOf(response) {
    return new Error(`vbuild IPC: ${response && response.message ? response.message : 'unexpected response'}`);
  }

  // A refused path (e.g. outside the workspace) is recorded and reported by
  // the runner as a warning; it is not the tool's failure, so do not throw.
  // Tools written for `vp run` may pass paths vbuild cannot honour.
  function declarePath(op, p) {
    const response = call(pathRequest(op, p));
    if (response.type !== 'ack' && response.type !== 'error') throw errorOf(response);
  }

  return Object.freeze({
    ignoreInput(p) {
      declarePath('ignoreInput', p);
    },
    ignoreOutput(p) {
      declarePath('ignoreOutput', p);
    },
    disableCache() {
      const response = call({ op: 'disableCache' });
      if (response.type !== 'ack') throw errorOf(response);
    },
    getEnv(name, options) {
      if (typeof name !== 'string') throw new TypeError('getEnv: name must be a string');
      const response = call({ op: 'getEnv', name, tracked: tracked(options) });
      if (response.type !== 'env') throw errorOf(response);
      // null on the wire means absent.
      return typeof response.value === 'string' ? response.value : undefined;
    },
    getEnvs(query, options) {
      let q;
      if (typeof query === 'string') q = { glob: query };
      else if (query !== null && typeof query === 'object' && typeof query.prefix === 'string') {
        q = { prefix: query.prefix };
      } else {
        throw new TypeError('getEnvs: query must be a glob string or { prefix: string }');
      }
      const response = call({ op: 'getEnvs', query: q, tracked: tracked(options) });
      if (response.type !== 'envs') throw errorOf(response);
      return response.values;
    },
    // vbuild extension: the exact inputs this tool read.
    reportUsedInputs(paths) {
      const list = Array.from(paths, (p) => toPath(p, 'reportUsedInputs'));
      const response = call({ op: 'reportUsedInputs', paths: list, cwd: process.cwd() });
      if (response.type !== 'ack' && response.type !== 'error') throw errorOf(response);
    },
  });
}

// Outside vbuild every call is a no-op with the package's documented results.
const NOOP = Object.freeze({
  ignoreInput() {},
  ignoreOutput() {},
  disableCache() {},
  getEnv() {
    return undefined;
  },
  getEnvs() {
    return {};
  },
  reportUsedInputs() {},
});

let client = null;

// `options` is reserved by vite-task for selecting an API version; version 1
// (the current shape) is the only one, so it is ignored.
function load(_options) {
  const socketPath = process.env.VBUILD_IPC_SOCKET;
  if (!socketPath) return NOOP;
  if (client === null) client = createClient(socketPath, process.env.VBUILD_IPC_TOKEN);
  return client;
}

module.exports = { load, PROTOCOL_VERSION };
