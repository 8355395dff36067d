// Helpers shared by warm-state.mjs and restore-test.mjs: load npm v86 under
// Node, build the emulator options exactly as the page does (vm-bridge's
// V86Engine), and talk HTTP to the guest through v86's "fetch" network
// adapter.
//
// v86 under Node reads every `url` with node:fs (its load_file), and an
// `async: true` disk with ranged reads, so image paths stand in for the URLs
// the page uses.

import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, "..");
export const V86_DIR = process.env.V86_DIR || join(REPO, "tests/node_modules/v86");
export const BIOS = process.env.V86_BIOS || "/usr/share/seabios/bios.bin";
export const VGA_BIOS = process.env.V86_VGA_BIOS || "/usr/share/seabios/vgabios-stdvga.bin";

/** The V86 class from npm v86 (tests/node_modules/v86 unless V86_DIR is set). */
export async function loadV86() {
  const lib = join(V86_DIR, "build/libv86.mjs");
  if (!existsSync(lib)) {
    throw new Error(`v86 not found in ${V86_DIR}; run: (cd tests && npm ci)`);
  }
  const { V86 } = await import(pathToFileURL(lib).href);
  return V86;
}

/** v86's package version, e.g. "0.5.462+g5f9a90f" (a state restores only in the same build). */
export function v86Version() {
  return JSON.parse(readFileSync(join(V86_DIR, "package.json"), "utf8")).version;
}

/** manifest.json of an image folder. */
export function readManifest(outdir) {
  return JSON.parse(readFileSync(join(outdir, "manifest.json"), "utf8"));
}

/**
 * The options the page gives v86 for this image. With `initialState` (a path)
 * the emulator restores that state instead of booting: no kernel, initrd or
 * command line then. Everything else must match between save and restore.
 */
export function pageOptions(outdir, manifest, { initialState } = {}) {
  outdir = resolve(outdir);
  const file = (role, dflt) => join(outdir, manifest.files[role]?.path || dflt);
  const options = {
    wasm_path: join(V86_DIR, "build/v86.wasm"),
    memory_size: manifest.memory_mb * 1024 * 1024,
    vga_memory_size: 2 * 1024 * 1024,
    bios: { url: BIOS },
    vga_bios: { url: VGA_BIOS },
    hda: { url: file("disk", "disk.img"), async: true, size: manifest.files.disk.size },
    net_device: { type: "virtio", relay_url: "fetch" },
    preserve_mac_from_state_image: true,
    autostart: true,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
  };
  if (initialState) {
    options.initial_state = { url: initialState };
  } else {
    options.bzimage = { url: file("vmlinuz", "vmlinuz") };
    options.initrd = { url: file("initrd", "initrd.img") };
    options.cmdline = manifest.cmdline;
  }
  return options;
}

/** Calls onLine(text) for every line the guest prints on its serial console. */
export function onSerialLine(emulator, onLine) {
  let line = "";
  emulator.add_listener("serial0-output-byte", (byte) => {
    if (byte === 10) {
      onLine(line.replace(/\r$/, ""));
      line = "";
    } else if (line.length < 4096) {
      line += String.fromCharCode(byte);
    }
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Opens a TCP connection to a guest port, retrying until `deadlineMs` (a
 * performance.now() value): v86 creates its network adapter only once its
 * wasm and files are loaded, a SYN sent before the restored guest runs is
 * lost, and v86's adapter never retransmits one. Resolves with the
 * connection once it is established.
 */
export async function guestConnect(emulator, port, { deadlineMs, attemptMs = 400 } = {}) {
  deadlineMs ??= performance.now() + 30000;
  let attempts = 0;
  for (;;) {
    // The adapter only exists once v86 has loaded its wasm and files.
    if (!emulator.network_adapter) {
      if (performance.now() > deadlineMs) throw new Error("v86 has no network adapter yet");
      await sleep(20);
      continue;
    }
    attempts++;
    const conn = emulator.network_adapter.connect(port);
    const outcome = await new Promise((done) => {
      const timer = setTimeout(() => done("timeout"), attemptMs);
      conn.on("connect", () => {
        clearTimeout(timer);
        done("connect");
      });
      conn.on("close", () => {
        clearTimeout(timer);
        done("refused");
      });
    });
    if (outcome === "connect") {
      conn.attempts = attempts;
      return conn;
    }
    conn.close();
    if (performance.now() > deadlineMs) {
      throw new Error(`guest :${port}: no connection after ${attempts} attempts (${outcome})`);
    }
    await sleep(outcome === "refused" ? 100 : 0);
  }
}

/**
 * One HTTP/1.1 request to the guest. The answer is read by Content-Length,
 * not by waiting for the close: v86 0.5.462 drops the data of a guest segment
 * that also carries FIN, so the request keeps the connection open and we
 * close it. `opts.headers` adds request headers. Resolves with {status,
 * headers, text, connectMs, ms, attempts}.
 */
export async function guestRequest(emulator, port, method, path, body = null, opts = {}) {
  const { deadlineMs, timeoutMs = 30000 } = opts;
  const started = performance.now();
  const conn = await guestConnect(emulator, port, { deadlineMs });
  const connectMs = performance.now() - started;
  const what = `${method} :${port}${path}`;
  return new Promise((resolveReq, rejectReq) => {
    let raw = Buffer.alloc(0);
    let done = false;
    const finish = (err, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      conn.close();
      err ? rejectReq(err) : resolveReq(value);
    };
    const timer = setTimeout(() => finish(new Error(`${what} timed out`)), timeoutMs);
    const tryParse = (final) => {
      const sep = raw.indexOf("\r\n\r\n");
      if (sep < 0) {
        if (final) finish(new Error(`${what}: no HTTP answer (${raw.length} bytes)`));
        return;
      }
      const lines = raw.subarray(0, sep).toString("latin1").split("\r\n");
      const headers = Object.fromEntries(
        lines.slice(1).map((l) => {
          const colon = l.indexOf(":");
          return [l.slice(0, colon).toLowerCase(), l.slice(colon + 1).trim()];
        }),
      );
      const rest = raw.subarray(sep + 4);
      const length = Number(headers["content-length"] ?? NaN);
      if (!final && !(rest.length >= length)) return;
      finish(null, {
        status: Number(lines[0].split(" ")[1]),
        headers,
        text: rest.subarray(0, Number.isNaN(length) ? rest.length : length).toString("utf8"),
        connectMs,
        ms: performance.now() - started,
        attempts: conn.attempts,
      });
    };
    // The adapter reuses its packet buffer: copy what it hands over.
    conn.on("data", (d) => {
      raw = Buffer.concat([raw, Buffer.from(d)]);
      tryParse(false);
    });
    conn.on("shutdown", () => tryParse(true));
    conn.on("close", () => tryParse(true));
    const extra = Object.entries(opts.headers || {}).map(([k, v]) => `${k}: ${v}\r\n`);
    const head = new TextEncoder().encode(
      `${method} ${path} HTTP/1.1\r\nHost: x\r\n` +
        (body ? `Content-Length: ${body.length}\r\n` : "") +
        extra.join("") +
        "\r\n",
    );
    conn.write(body ? Buffer.concat([head, body]) : head);
  });
}

/** guestRequest for a GET. */
export const guestGet = (emulator, port, path, opts) =>
  guestRequest(emulator, port, "GET", path, null, opts);

/** An uncompressed ustar archive of {name: text} regular files. */
export function makeTar(files) {
  const enc = new TextEncoder();
  const parts = [];
  for (const [name, text] of Object.entries(files)) {
    const data = enc.encode(text);
    const h = new Uint8Array(512);
    const put = (off, len, str) => h.set(enc.encode(str).subarray(0, len), off);
    const octal = (n, len) => n.toString(8).padStart(len - 1, "0") + "\0";
    put(0, 100, name);
    put(100, 8, octal(0o644, 8));
    put(108, 8, octal(0, 8));
    put(116, 8, octal(0, 8));
    put(124, 12, octal(data.length, 12));
    put(136, 12, octal(Math.floor(Date.now() / 1000), 12));
    put(148, 8, "        ");
    put(156, 1, "0");
    put(257, 6, "ustar\0");
    put(263, 2, "00");
    put(148, 8, h.reduce((a, b) => a + b, 0).toString(8).padStart(6, "0") + "\0 ");
    parts.push(h, data, new Uint8Array((512 - (data.length % 512)) % 512));
  }
  parts.push(new Uint8Array(1024));
  return Buffer.concat(parts);
}
