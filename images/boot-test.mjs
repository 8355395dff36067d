#!/usr/bin/env node
// Boots an image built by images/build.sh in v86, headless under Node, and
// checks it end to end:
//   1. streams the serial console to stdout until the guest prints APPSERVER-READY
//   2. GET /__health from nginx (:80) and /v1/health from the agent (:8081)
//   3. PUT a tiny tar as app "demo" to the agent, then GET /app/demo/index.html
//      through nginx and compare the bytes
//   4. PUT a tar with a "../" entry: expects 400 path_escapes, demo still served
//   5. GET /v1/apps, DELETE /v1/apps/demo, then /app/demo/ must be 404
// All guest connections go through v86's "fetch" network adapter
// (emulator.network_adapter.connect(port)), the way the page talks to the VM.
//
// Usage: node images/boot-test.mjs OUTDIR [--timeout-s N] [--memory-mb N] [--cmdline S]
//                                          [--big-kib N] [--mtu N]
// Needs npm v86@0.5.462 in tests/node_modules (cd tests && npm install) and
// Debian's seabios package. Exit status 0 = all checks passed.

import { openSync, readSync, fstatSync, closeSync, readFileSync, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "..");
const V86_DIR = process.env.V86_DIR || join(REPO, "tests/node_modules/v86");
const BIOS = process.env.V86_BIOS || "/usr/share/seabios/bios.bin";
const VGA_BIOS = process.env.V86_VGA_BIOS || "/usr/share/seabios/vgabios-stdvga.bin";

// ---------------------------------------------------------------- arguments --
const args = process.argv.slice(2);
const outdir = args.find((a) => !a.startsWith("--"));
const flag = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
if (!outdir) {
  console.error(
    "usage: node images/boot-test.mjs OUTDIR [--timeout-s N] [--memory-mb N] [--cmdline S]" +
      " [--big-kib N] [--mtu N]",
  );
  process.exit(2);
}
const manifest = JSON.parse(readFileSync(join(outdir, "manifest.json"), "utf8"));
const TIMEOUT_MS = Number(flag("--timeout-s", 240)) * 1000;
const MEMORY_MB = Number(flag("--memory-mb", manifest.memory_mb));
const CMDLINE = flag("--cmdline", manifest.cmdline);

// ------------------------------------------------------------------ helpers --
const t0 = performance.now();
const ms = () => Math.round(performance.now() - t0);
const log = (msg) => process.stdout.write(`[boot-test ${String(ms()).padStart(6)} ms] ${msg}\n`);

/** Reads a file into a fresh ArrayBuffer (v86 wants ArrayBuffers, not Node Buffers). */
function readArrayBuffer(path) {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const buf = new ArrayBuffer(size);
    const view = new Uint8Array(buf);
    let off = 0;
    while (off < size) {
      const n = readSync(fd, view, off, Math.min(size - off, 1 << 24), off);
      if (n === 0) throw new Error(`short read on ${path}`);
      off += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

/** One tar header block (ustar) for a regular file or directory. */
function tarHeader(name, size, type = "0") {
  const h = new Uint8Array(512);
  const put = (off, len, text) => h.set(new TextEncoder().encode(text).subarray(0, len), off);
  const octal = (n, len) => n.toString(8).padStart(len - 1, "0") + "\0";
  put(0, 100, name);
  put(100, 8, octal(type === "5" ? 0o755 : 0o644, 8));
  put(108, 8, octal(0, 8));
  put(116, 8, octal(0, 8));
  put(124, 12, octal(size, 12));
  put(136, 12, octal(Math.floor(Date.now() / 1000), 12));
  put(148, 8, "        ");
  put(156, 1, type);
  put(257, 6, "ustar\0");
  put(263, 2, "00");
  const sum = h.reduce((a, b) => a + b, 0);
  put(148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

/** An uncompressed tar of {path: string contents}; names ending in '/' are folders. */
function makeTar(files) {
  const parts = [];
  for (const [name, text] of Object.entries(files)) {
    if (name.endsWith("/")) {
      parts.push(tarHeader(name, 0, "5"));
      continue;
    }
    const data = new TextEncoder().encode(text);
    const padding = new Uint8Array((512 - (data.length % 512)) % 512);
    parts.push(tarHeader(name, data.length), data, padding);
  }
  parts.push(new Uint8Array(1024));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * Works around a bug in v86 0.5.462's JS TCP stack (src/browser/fake_network.js,
 * TCPConnection.process): a segment from the guest that carries data AND the
 * FIN flag has its data dropped (only the FIN is acknowledged). Linux sends
 * exactly that whenever a server closes while part of its answer is still
 * queued, which with v86's one-segment-in-flight sending is every answer
 * longer than one segment (~1.4 kB) followed by a close: the tail is lost.
 * The patch splits such a segment into a data segment and a bare FIN.
 * Patches the shared prototype once, given any connection object.
 */
function patchFinWithData(conn) {
  const proto = Object.getPrototypeOf(conn);
  if (proto.__appserverFinPatch) return;
  const original = proto.process;
  proto.process = function (packet) {
    const data = packet.tcp_data;
    if (packet.tcp?.fin && data?.length > 0 && this.ack === packet.tcp.seq) {
      original.call(this, { ...packet, tcp: { ...packet.tcp, fin: false } });
      if (this.state === "closed") return;
      const finOnly = {
        ...packet,
        tcp: { ...packet.tcp, seq: this.ack },
        tcp_data: data.subarray(0, 0),
      };
      return original.call(this, finOnly);
    }
    return original.call(this, packet);
  };
  proto.__appserverFinPatch = true;
}

/**
 * Sends one HTTP/1.1 request to the guest through the fetch adapter and
 * resolves with {status, headers, body (Uint8Array), text, ms} once the guest
 * closes the connection.
 */
function guestHttp(emulator, port, method, path, body = null, opts = {}) {
  const timeoutMs = opts.timeoutMs ?? 60000;
  return new Promise((resolveReq, rejectReq) => {
    const started = performance.now();
    const length = opts.contentLength ?? body?.length;
    const head =
      `${method} ${path} HTTP/1.1\r\nHost: 192.168.86.100\r\nConnection: close\r\n` +
      (length !== undefined
        ? `Content-Length: ${length}\r\nContent-Type: application/x-tar\r\n`
        : "") +
      "\r\n";
    const chunks = [];
    let done = false;
    const conn = emulator.network_adapter.connect(port);
    if (!process.env.NO_FIN_PATCH) patchFinWithData(conn);
    const what = `${method} :${port}${path}`;
    const timer = setTimeout(() => finish(new Error(`${what} timed out`)), timeoutMs);
    function finish(err) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) return rejectReq(err);
      const raw = Buffer.concat(chunks);
      const sep = raw.indexOf("\r\n\r\n");
      if (sep < 0) {
        return rejectReq(new Error(`${what}: no HTTP response (${raw.length} bytes)`));
      }
      const lines = raw.subarray(0, sep).toString("latin1").split("\r\n");
      const status = Number(lines[0].split(" ")[1]);
      const headers = Object.fromEntries(
        lines.slice(1).map((l) => {
          const colon = l.indexOf(":");
          return [l.slice(0, colon).toLowerCase(), l.slice(colon + 1).trim()];
        }),
      );
      const bodyBytes = raw.subarray(sep + 4);
      resolveReq({
        status,
        headers,
        body: bodyBytes,
        text: bodyBytes.toString("utf8"),
        ms: Math.round(performance.now() - started),
      });
    }
    conn.on("connect", () => {
      const req = new TextEncoder().encode(head);
      if (body) {
        const all = new Uint8Array(req.length + body.length);
        all.set(req);
        all.set(body, req.length);
        conn.write(all);
      } else {
        conn.write(req);
      }
    });
    // The data view may be reused by the adapter: copy it.
    conn.on("data", (d) => chunks.push(Buffer.from(d)));
    conn.on("shutdown", () => {
      conn.close();
      finish();
    });
    conn.on("close", () => finish());
  });
}

// -------------------------------------------------------------------- main --
if (!existsSync(join(V86_DIR, "build/libv86.mjs"))) {
  console.error(`v86 not found in ${V86_DIR}; run: (cd tests && npm install)`);
  process.exit(2);
}
const { V86 } = await import(pathToFileURL(join(V86_DIR, "build/libv86.mjs")).href);

log(`image ${manifest.id} version ${manifest.version}, ${MEMORY_MB} MB RAM`);
log(`cmdline: ${CMDLINE}`);
const emulator = new V86({
  wasm_path: join(V86_DIR, "build/v86.wasm"),
  bios: { buffer: readArrayBuffer(BIOS) },
  vga_bios: { buffer: readArrayBuffer(VGA_BIOS) },
  bzimage: { buffer: readArrayBuffer(join(outdir, manifest.files.vmlinuz.path || "vmlinuz")) },
  initrd: { buffer: readArrayBuffer(join(outdir, manifest.files.initrd.path || "initrd.img")) },
  hda: { buffer: readArrayBuffer(join(outdir, manifest.files.disk.path || "disk.img")) },
  cmdline: CMDLINE,
  memory_size: MEMORY_MB * 1024 * 1024,
  vga_memory_size: 2 * 1024 * 1024,
  net_device: {
    type: "virtio",
    relay_url: "fetch",
    ...(flag("--mtu") ? { mtu: Number(flag("--mtu")) } : {}),
  },
  autostart: true,
  disable_keyboard: true,
  disable_mouse: true,
  disable_speaker: true,
});

let failed = false;
const check = (ok, what) => {
  log(`${ok ? "PASS" : "FAIL"} ${what}`);
  if (!ok) failed = true;
};

// Serial console -> stdout, line by line; resolve when the ready line appears.
let startedAt = null;
emulator.add_listener("emulator-started", () => {
  startedAt = performance.now();
  log("emulator started");
});
const ready = new Promise((resolveReady) => {
  let line = "";
  emulator.add_listener("serial0-output-byte", (byte) => {
    const ch = String.fromCharCode(byte);
    if (ch === "\n") {
      process.stdout.write(`[serial ${String(ms()).padStart(6)} ms] ${line.replace(/\r$/, "")}\n`);
      if (line.replace(/\r$/, "") === "APPSERVER-READY") resolveReady();
      line = "";
    } else {
      line += ch;
    }
  });
});

const watchdog = setTimeout(() => {
  log(`TIMEOUT after ${TIMEOUT_MS / 1000} s`);
  emulator.destroy();
  process.exit(1);
}, TIMEOUT_MS);

try {
  await ready;
  const bootMs = Math.round(performance.now() - (startedAt ?? t0));
  console.log(`boot_to_ready_ms: ${bootMs}`);
  if (typeof emulator.network_adapter?.connect !== "function") {
    throw new Error("this v86 build has no network_adapter.connect");
  }

  const health = await guestHttp(emulator, 80, "GET", "/__health");
  log(`nginx /__health -> ${health.status} ${JSON.stringify(health.text)} (${health.ms} ms)`);
  check(health.status === 200 && health.text === "ok\n", "nginx answers /__health");
  const health2 = await guestHttp(emulator, 80, "GET", "/__health");
  log(`nginx /__health again (${health2.ms} ms)`);

  const agentHealth = await guestHttp(emulator, 8081, "GET", "/v1/health");
  log(`agent /v1/health -> ${agentHealth.status} ${agentHealth.text} (${agentHealth.ms} ms)`);
  check(agentHealth.status === 200 && agentHealth.text === '{"ok":true}', "agent health");

  const page = `<!doctype html><h1>hello from demo</h1><p>${new Date().toISOString()}</p>\n`;
  const tar = makeTar({
    "./": "",
    "./index.html": page,
    "./css/": "",
    "./css/site.css": "h1{color:teal}\n",
  });
  const put = await guestHttp(emulator, 8081, "PUT", "/v1/apps/demo", tar);
  log(`PUT /v1/apps/demo (${tar.length} bytes) -> ${put.status} ${put.text} (${put.ms} ms)`);
  check(put.status === 200 && JSON.parse(put.text).files === 2, "deploy demo");

  const got = await guestHttp(emulator, 80, "GET", "/app/demo/index.html");
  log(`GET /app/demo/index.html -> ${got.status}, ${got.body.length} bytes (${got.ms} ms)`);
  check(got.status === 200 && got.text === page, "nginx serves the deployed file");
  const dir = await guestHttp(emulator, 80, "GET", "/app/demo/");
  check(dir.status === 200 && dir.text === page, "index.html is the folder index");
  const redirect = await guestHttp(emulator, 80, "GET", "/app/demo");
  const location = redirect.headers.location;
  check(redirect.status === 301 && location === "/app/demo/", "/app/demo redirects");

  const errorCode = (r) => JSON.parse(r.text).error?.code;
  const evil = makeTar({ "index.html": "pwned", "../evil.html": "x" });
  const bad = await guestHttp(emulator, 8081, "PUT", "/v1/apps/demo", evil);
  log(`PUT evil tar -> ${bad.status} ${bad.text}`);
  check(bad.status === 400 && errorCode(bad) === "path_escapes", "'..' refused");
  const still = await guestHttp(emulator, 80, "GET", "/app/demo/index.html");
  check(still.status === 200 && still.text === page, "old version still served after refusal");

  const badName = await guestHttp(emulator, 8081, "PUT", "/v1/apps/Admin", tar);
  check(badName.status === 400 && errorCode(badName) === "bad_name", "bad name refused");

  const tooBig = await guestHttp(emulator, 8081, "PUT", "/v1/apps/big", null, {
    contentLength: 64 * 1024 * 1024 + 1,
  });
  check(tooBig.status === 413 && errorCode(tooBig) === "too_large", "64 MiB + 1 refused (413)");

  // A bigger upload, to see the transfer rate through the fetch adapter.
  const bigKiB = Number(flag("--big-kib", 1024));
  const blob = "x".repeat(1023) + "\n";
  const bigTar = makeTar({ "index.html": "big\n", "blob.txt": blob.repeat(bigKiB) });
  const slow = { timeoutMs: 600000 };
  const bigPut = await guestHttp(emulator, 8081, "PUT", "/v1/apps/big", bigTar, slow);
  const kibPerS = Math.round(bigTar.length / 1024 / (bigPut.ms / 1000));
  const sent = bigTar.length;
  log(`PUT /v1/apps/big (${sent} B) -> ${bigPut.status}, ${bigPut.ms} ms, ${kibPerS} KiB/s`);
  check(bigPut.status === 200, "bigger upload");
  const bigGet = await guestHttp(emulator, 80, "GET", "/app/big/blob.txt", null, slow);
  const getKibPerS = Math.round(bigGet.body.length / 1024 / (bigGet.ms / 1000));
  const got2 = bigGet.body.length;
  log(`GET /app/big/blob.txt -> ${bigGet.status}, ${got2} B, ${bigGet.ms} ms, ${getKibPerS} KiB/s`);
  check(bigGet.status === 200 && bigGet.body.length === blob.length * bigKiB, "bigger download");

  const list = await guestHttp(emulator, 8081, "GET", "/v1/apps");
  log(`GET /v1/apps -> ${list.status} ${list.text}`);
  const listed = JSON.parse(list.text).apps.map((a) => a.name);
  check(list.status === 200 && listed.includes("demo"), "list shows demo");

  const del = await guestHttp(emulator, 8081, "DELETE", "/v1/apps/demo");
  log(`DELETE /v1/apps/demo -> ${del.status} ${del.text} (${del.ms} ms)`);
  check(del.status === 200, "delete demo");
  const gone = await guestHttp(emulator, 80, "GET", "/app/demo/index.html");
  check(gone.status === 404, "deleted app is gone from nginx");

  // Deploy again so a saved state of this run would include an app.
  const again = await guestHttp(emulator, 8081, "PUT", "/v1/apps/demo", tar);
  check(again.status === 200, "redeploy after delete");
  log(`total ${ms()} ms`);
} catch (err) {
  log(`ERROR ${err.stack || err}`);
  failed = true;
}
clearTimeout(watchdog);
emulator.destroy();
log(failed ? "RESULT: FAIL" : "RESULT: PASS");
process.exit(failed ? 1 : 0);
