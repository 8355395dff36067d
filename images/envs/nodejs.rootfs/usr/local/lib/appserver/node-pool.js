#!/usr/bin/node
/*
 * Warm pool of the nodejs image: starts Node.js apps without a cold start.
 *
 * In v86 a new node process is slow (the interpreter start alone takes
 * 30-45 s, `require("express")` more), and after a restore of the saved VM
 * state every process started anew runs cold (41-76 s), while processes that
 * were already running in the state are fast. Node cannot fork, so this pool
 * keeps WARM (default 2) idle worker processes that have already loaded
 * express and the core modules and served a few requests through them.
 * appserver-init starts the pool before the state is saved and waits for
 * /run/appserver/node-pool.ready, written once the workers are idle, so the
 * saved state has them loaded. "start" hands the app to one idle worker: it
 * changes to the app's folder, takes the app's environment and requires its
 * entry script. Then a replacement worker is started in the background (at
 * nice 19) to refill the pool; no start ever waits for it. A worker that was
 * given an app is never given another one; with no idle worker left, a start
 * takes a refill that has loaded its modules, if there is one (told to
 * skip the rest of its warm-up), else spawns a cold one and says so ("cold": true). A
 * restart of an app whose last run, from the same folder, ended before it
 * listened (a crash loop: the agent restarts crashed apps) always gets a
 * cold one, at nice 19, so that a crashing app cannot use up the warm
 * workers. After a restore (seen as a jump of the
 * guest clock, which the page sets) the idle workers run their warm-up once
 * more at nice 19, so that v86 compiles Node's code before an app needs it.
 *
 * Protocol (the same as python-pool.py's): a client connects to
 * /run/appserver/pool.sock, sends one JSON object on one line and reads one
 * JSON line back; then the pool closes.
 *
 *   {"op": "ping"}
 *       -> {"ok": true, "pid": N, "preloaded": [...], "failed": {...},
 *           "idle": N, "warming": N}
 *   {"op": "start", "name": "demo", "dir": "/srv/apps/demo", "port": 9001,
 *    "kind": "express", "entry": "server.js", "prefix": "/app/demo",
 *    "env": {}, "log": null, "wait": false}
 *       kind: node | express | auto (all run the same way), or a kind with
 *       a runner script of the image's, RUNNERS/<kind>.js, which the
 *       worker runs in the app's folder instead of an entry (the nextjs
 *       image's next.js runs `next start`). entry: the script, relative to
 *       dir (default: package.json "main", else server.js, app.js, index.js
 *       or main.js). The app gets PORT,
 *       NODE_ENV=production (unless env sets it), APPSERVER_PREFIX and env.
 *       log: its stdout and stderr, default /var/log/appserver/<name>.log
 *       (emptied on start; the previous one is kept as <name>.log.1). With
 *       "wait": true the answer comes once the app listens on the port, or
 *       has exited. A start of an app that is being stopped waits for the
 *       old process to end first.
 *       -> {"ok": true, "pid": N, "state": "starting" | "running",
 *           "cold": false, "ready_s": seconds}
 *       -> {"ok": false, "error": "...", "state": "exited", "code": 1,
 *           "signal": null}
 *   {"op": "stop", "name": "demo"}   SIGTERM to the app's process group,
 *       SIGKILL after 5 s -> {"ok": true, "pid": N}
 *   {"op": "status"} -> {"ok": true, "apps": {"demo": {"pid", "port",
 *       "kind", "dir", "state": "starting" | "running" | "exited", "code",
 *       "signal", "started", "ended" (unix times), "ready_s", "cold", "log",
 *       "rss_kb", "pss_kb"}}, "pool": {"pid", "rss_kb", "pss_kb", "warm",
 *       "idle", "warming", "workers": [{"pid", "state", "rss_kb", "pss_kb"}]},
 *       "meminfo_kb": {"MemTotal", "MemFree", "MemAvailable"}}
 *   {"op": "proxy", "name": "demo", "port": 9001}   TEMPORARY, for
 *       images/node-test.mjs until the agent writes proxy snippets: writes
 *       /etc/nginx/apps/<name>.conf proxying /app/<name>/ to the port with
 *       the prefix taken off (redirects to "/x" come back as /app/<name>/x,
 *       X-Forwarded-Prefix tells the app) and reloads nginx -> {"ok": true}
 *
 * With --serial DEV (temporary, for tests) lines "pool: {json}" read from
 * that tty are handled like socket requests and answered as
 * "pool-reply: {json}". --warm N sets the number of idle workers.
 *
 * An image adds to what workers load ahead with modules in WARM_DIR: each is
 * required with the PRELOAD and its warmUp(stop) runs after Express's (the
 * nextjs image's serves a small Next.js app once).
 *
 * The same file is the worker: `node-pool.js --worker [--cold]`. It talks to
 * the pool over the IPC channel of child_process: it sends {type: "ready"}
 * once loaded, gets {type: "run", ...} (or {type: "heat"}: warm up again),
 * and reports every server of the app that starts listening as
 * {type: "listening", port}. Between {type: "preloaded"} (its modules are
 * loaded) and "ready", {type: "hurry"} ends its warm-up early. A cold worker loads nothing ahead.
 */

"use strict";

const fs = require("fs");
const net = require("net");
const os = require("os");
const path = require("path");
const childProcess = require("child_process");

const SOCKET = "/run/appserver/pool.sock";
const READY_FILE = "/run/appserver/node-pool.ready";
const LOG_DIR = "/var/log/appserver";
const STOP_GRACE_MS = 5000;
const NAME_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
const RUNNERS = "/usr/local/lib/appserver/runners";
const WARM_DIR = "/usr/local/lib/appserver/warm.d";
const ENTRY_CANDIDATES = ["server.js", "app.js", "index.js", "main.js", "server.mjs", "app.mjs",
  "index.mjs"];

// Modules a worker loads before it is given an app; what fails to load is
// reported by "ping" and otherwise ignored (the app then loads it itself,
// cold). Each one costs memory in every worker, so only the common ones.
const PRELOAD = [
  "http", "https", "net", "dns", "fs", "fs/promises", "path", "url", "util", "events",
  "stream", "stream/promises", "crypto", "zlib", "os", "querystring", "child_process",
  "string_decoder", "timers/promises", "assert", "readline", "worker_threads",
  "express", "body-parser", "cookie-parser", "cors", "compression", "morgan",
  "serve-static", "ejs", "mime", "debug", "uuid",
];

function log(msg) {
  process.stdout.write(`node-pool: ${msg}\n`);
}

// ================================================================ worker ==

/** The image's extra warm-up modules (WARM_DIR/*.js), by path. */
function imageWarmUps() {
  try {
    return fs.readdirSync(WARM_DIR).filter((f) => f.endsWith(".js")).sort()
      .map((f) => path.join(WARM_DIR, f));
  } catch (e) {
    return [];
  }
}

/** Loads PRELOAD and the image's warm-ups; returns [loaded names, {name: error}]. */
function preload() {
  const loaded = [];
  const failed = {};
  for (const name of [...PRELOAD, ...imageWarmUps()]) {
    try {
      require(name);
      loaded.push(name);
    } catch (e) {
      failed[name] = `${e.code || e.name}: ${String(e.message).split("\n")[0]}`;
    }
  }
  return [loaded, failed];
}

/**
 * Runs requests through an Express app in this process (JSON in and out, a
 * static file, a redirect, a template, a 404), so that what Express, its
 * router and Node's HTTP server compile or load on first use is already in
 * memory when the saved state is restored.
 */
async function warmUp(stop = () => false) {
  const http = require("http");
  const express = require("express");
  const app = express();
  app.use(express.json());
  app.use(express.urlencoded({ extended: false }));
  app.use(express.static(__dirname));
  app.get("/items/:id", (req, res) => res.json({ id: Number(req.params.id), q: req.query.q }));
  app.post("/items", (req, res) => res.status(201).json(req.body));
  app.get("/go", (req, res) => res.redirect("/items/1"));
  app.get("/page", (req, res) => {
    let html = "<ul><% items.forEach(function (i) { %><li><%= i %></li><% }) %></ul>";
    try {
      html = require("ejs").render(html, { items: [1, 2] });
    } catch (e) {
      // no ejs: plain text then
    }
    res.type("html").send(html);
  });
  const server = http.createServer(app);
  server.appserverWarmUp = true; // not the app's server: not reported
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  const call = (method, urlPath, body) => new Promise((resolve) => {
    if (stop()) return resolve();
    const req = http.request({ host: "127.0.0.1", port, method, path: urlPath, agent: false,
      headers: body ? { "Content-Type": "application/json" } : {} }, (res) => {
      res.resume();
      res.on("end", resolve);
    });
    req.on("error", resolve);
    req.end(body);
  });
  for (let round = 0; round < 3 && !stop(); round++) {
    await call("GET", "/items/7?q=x");
    await call("POST", "/items", JSON.stringify({ name: "cup", price: 2.5 }));
    await call("GET", `/${path.basename(__filename)}`);
    await call("GET", "/go");
    await call("GET", "/page");
    await call("GET", "/nothing-here");
  }
  await new Promise((resolve) => server.close(resolve));
  for (const file of imageWarmUps()) {
    if (stop()) break;
    await require(file).warmUp(stop);
  }
  // What an ES module app's `import express from "express"` goes through:
  // the ESM loader and its CommonJS bridge.
  await import(require("url").pathToFileURL(require.resolve("express")).href);
}

let runAt = null; // when this worker was given its app

/** Reports every server of the app that starts listening. */
function reportListening() {
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function patchedListen(...args) {
    if (!this.appserverWarmUp) {
      this.once("listening", () => {
        const addr = this.address();
        if (!addr || typeof addr !== "object") return;
        if (runAt !== null) console.log(`[pool] listening on :${addr.port} ${Date.now() - runAt} ms after the start`);
        if (process.connected) process.send({ type: "listening", port: addr.port }, () => {});
      });
    }
    return listen.apply(this, args);
  };
}

/** All threads of this process to nice `n` (refills start at 19, apps run at 0). */
function renice(n) {
  try {
    for (const tid of fs.readdirSync("/proc/self/task")) os.setPriority(Number(tid), n);
  } catch (e) {
    // not fatal: only the priority is off
  }
}

/** True when Node would load `file` as an ES module. */
function isEsm(file) {
  if (file.endsWith(".mjs")) return true;
  if (file.endsWith(".cjs")) return false;
  for (let dir = path.dirname(file); ; dir = path.dirname(dir)) {
    try {
      return JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).type === "module";
    } catch (e) {
      if (e.code !== "ENOENT") return false;
    }
    if (dir === path.dirname(dir)) return false;
  }
}

/** In the worker: becomes the app described by `msg`. */
function runApp(msg) {
  runAt = Date.now();
  renice(0);
  process.title = `node ${msg.entry} (${msg.name})`;
  const file = path.resolve(msg.dir, msg.entry);
  process.chdir(msg.dir);
  const env = { ...process.env, ...msg.env };
  for (const key of Object.keys(process.env)) delete process.env[key];
  Object.assign(process.env, env);
  process.argv = [process.execPath, file];
  // The pool's channel must not keep an app alive that has nothing else to do.
  process.channel?.unref();
  process.removeAllListeners("message");
  process.removeAllListeners("disconnect");
  console.log(`[pool] starting ${msg.name}: node ${msg.entry} in ${msg.dir}, PORT=${env.PORT}`);
  try {
    if (isEsm(file)) {
      import(require("url").pathToFileURL(file).href).catch((e) => {
        console.error(e);
        process.exit(1);
      });
    } else {
      // As `node file` does: the entry becomes require.main.
      require("module")._load(file, null, true);
    }
  } catch (e) {
    console.error(e);
    process.exit(1);
  }
}

async function workerMain(cold) {
  const t0 = Date.now();
  let loaded = [];
  let failed = {};
  // The pool took this worker for an app before it was ready: cut the
  // warm-up short.
  let hurried = false;
  const onHurry = (msg) => {
    if (msg && msg.type === "hurry") hurried = true;
  };
  process.on("message", onHurry);
  if (!cold) {
    [loaded, failed] = preload();
    process.send({ type: "preloaded" });
    try {
      await warmUp(() => hurried);
    } catch (e) {
      failed.warm_up = String(e && e.stack);
    }
  }
  process.removeListener("message", onHurry);
  reportListening();
  let running = false;
  let heating = false;
  process.on("message", (msg) => {
    if (msg && msg.type === "run" && !running) {
      running = true;
      runApp(msg);
    } else if (msg && msg.type === "heat" && !running && !heating && !cold) {
      // After a restore of the saved state v86 has compiled none of the
      // emulated code: run the warm-up again, at nice 19, so that Node's and
      // Express's code paths are compiled before an app needs them (the
      // emulator's code cache is per physical page, so this also speeds up
      // node's shared code in every other process).
      // An app given to this worker meanwhile stops it after this round.
      heating = true;
      renice(19);
      warmUp(() => running).catch(() => {}).finally(() => {
        heating = false;
        if (!running) renice(0);
        if (process.connected) process.send({ type: "heated" }, () => {});
      });
    }
  });
  // An idle worker whose pool is gone has no purpose.
  process.on("disconnect", () => {
    if (!running) process.exit(0);
  });
  process.send({ type: "ready", loaded, failed, load_ms: Date.now() - t0 });
}

// ================================================================== pool ==

const opts = { warm: 2, serial: null };
const apps = new Map(); // name -> app record
const workers = new Map(); // pid -> {child, state: warming|idle|busy, cold, log, onReady}
let PRELOADED = [];
let FAILED = {};
let warmFailures = 0;
let readyWritten = false;
let reportedFailures = false;

function memory(pid) {
  try {
    const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, "ascii");
    const out = {};
    for (const key of ["Rss", "Pss"]) {
      const m = text.match(new RegExp(`^${key}:\\s+(\\d+)`, "m"));
      if (m) out[`${key.toLowerCase()}_kb`] = Number(m[1]);
    }
    return out;
  } catch (e) {
    return {};
  }
}

function meminfo() {
  const text = fs.readFileSync("/proc/meminfo", "ascii");
  const out = {};
  for (const key of ["MemTotal", "MemFree", "MemAvailable"]) {
    out[key] = Number(text.match(new RegExp(`^${key}:\\s+(\\d+)`, "m"))[1]);
  }
  return out;
}

const counts = () => {
  let idle = 0;
  let warming = 0;
  for (const w of workers.values()) {
    if (w.state === "idle") idle++;
    else if (w.state === "warming" && !w.cold) warming++;
  }
  return { idle, warming };
};

let workerSeq = 0;

/**
 * Spawns a worker; its stdout and stderr go to a log file of its own, which
 * becomes the app's log when it is given an app (renamed: the worker keeps
 * writing to the same file). `nice` for refills, so apps keep the CPU.
 */
function spawnWorker({ cold = false, nice = false } = {}) {
  fs.mkdirSync(LOG_DIR, { recursive: true });
  const logPath = `${LOG_DIR}/.worker-${process.pid}-${++workerSeq}.log`;
  // Appending: the file is emptied when it becomes an app's log.
  const fd = fs.openSync(logPath, "a", 0o644);
  const args = [__filename, "--worker", ...(cold ? ["--cold"] : [])];
  const [cmd, argv] = nice ? ["/usr/bin/nice", ["-n", "19", process.execPath, ...args]]
    : [process.execPath, args];
  const child = childProcess.spawn(cmd, argv, {
    stdio: ["ignore", fd, fd, "ipc"],
    detached: true, // its own process group, so "stop" reaches the app's children
    cwd: "/",
    serialization: "json",
  });
  fs.closeSync(fd);
  const w = { child, pid: child.pid, state: "warming", cold, log: logPath, spawned: Date.now(),
    onReady: null };
  workers.set(child.pid, w);
  child.on("message", (msg) => onWorkerMessage(w, msg));
  child.on("exit", (code, signal) => onWorkerExit(w, code, signal));
  child.on("error", (e) => log(`worker ${child.pid}: ${e.message}`));
  return w;
}

function onWorkerMessage(w, msg) {
  if (!msg || typeof msg !== "object") return;
  if (msg.type === "ready" && w.load_ms === undefined) {
    w.load_ms = msg.load_ms;
    // A cold worker was spawned for an app: it is "busy" already.
    if (w.state === "warming") w.state = "idle";
    if (!w.cold) {
      PRELOADED = msg.loaded;
      FAILED = msg.failed;
      warmFailures = 0;
      if (!reportedFailures) {
        reportedFailures = true;
        for (const [name, why] of Object.entries(msg.failed)) log(`could not preload ${name}: ${why}`);
      }
    }
    if (w.onReady) {
      const go = w.onReady;
      w.onReady = null;
      go();
    } else {
      maybeReady();
    }
    refill();
  } else if (msg.type === "preloaded") {
    w.preloaded = true;
  } else if (msg.type === "heated") {
    w.heating = false;
  } else if (msg.type === "listening" && w.app) {
    const a = apps.get(w.app);
    if (a && a.pid === w.pid) {
      if (msg.port === a.port) markRunning(a);
      else if (!a.warned) {
        a.warned = true;
        log(`${a.name} listens on :${msg.port}, not on its PORT ${a.port}`);
      }
    }
  }
}

function onWorkerExit(w, code, signal) {
  workers.delete(w.pid);
  const a = w.app && apps.get(w.app);
  if (a && a.pid === w.pid) {
    clearTimeout(a.killTimer);
    clearInterval(a.poll);
    a.state = "exited";
    a.code = code;
    a.signal = signal ? os.constants.signals[signal] ?? null : null;
    a.ended = Date.now() / 1000;
    for (const reply of a.waiters.splice(0)) {
      reply({ ok: false, error: `${a.name} exited before listening; see ${a.log}`,
        state: "exited", code: a.code, signal: a.signal });
    }
    const next = a.onExit.splice(0);
    for (const go of next) go();
    setImmediate(refill);
    return;
  }
  // A worker that died before it got an app.
  let tail = "";
  try {
    tail = fs.readFileSync(w.log, "utf8").trim().split("\n").slice(-3).join(" | ");
    fs.unlinkSync(w.log);
  } catch (e) {
    // nothing logged
  }
  log(`worker ${w.pid} (${w.state}) ended (${signal || `code ${code}`})${tail ? `: ${tail}` : ""}`);
  if (w.state === "warming" && !w.cold) warmFailures++;
  if (w.onReady) {
    const go = w.onReady;
    w.onReady = null;
    go(new Error(`the worker ended (${signal || `code ${code}`}) before it was ready`));
  }
  setTimeout(refill, warmFailures ? Math.min(60000, 2000 * 2 ** warmFailures) : 0);
}

/**
 * A warming refill taken for an app: all its threads back to nice 0, and it
 * is told to end its warm-up early (what it has not loaded yet, the app
 * loads itself).
 */
function hurry(w) {
  try {
    for (const tid of fs.readdirSync(`/proc/${w.pid}/task`)) os.setPriority(Number(tid), 0);
  } catch (e) {
    // not fatal: it only stays slower
  }
  if (w.child.connected) w.child.send({ type: "hurry" }, () => {});
}

/** Starts one replacement worker when the pool is short and none is warming. */
function refill() {
  const { idle, warming } = counts();
  if (idle + warming >= opts.warm || warming > 0 || warmFailures >= 5) return;
  // Before the ready file (the image build's boot) nothing else runs.
  spawnWorker({ nice: readyWritten });
}

/** Writes the ready file once the first WARM workers are idle. */
function maybeReady() {
  if (readyWritten || counts().idle < opts.warm) return;
  readyWritten = true;
  fs.writeFileSync(READY_FILE, `${process.pid}\n`);
  const loadMs = [...workers.values()].map((w) => w.load_ms);
  log(`ready: ${opts.warm} workers idle (loaded in ${loadMs.join(", ")} ms), ` +
    `${PRELOADED.length} modules preloaded; ${SOCKET}`);
}

/** True when something listens on TCP `port` (IPv4 or IPv6). */
function portListens(port) {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")} `;
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = fs.readFileSync(file, "ascii");
    } catch (e) {
      continue;
    }
    for (const line of text.split("\n")) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] === "0A" && `${cols[1]} `.includes(hex)) return true;
    }
  }
  return false;
}

function markRunning(a) {
  if (a.state !== "starting") return;
  clearInterval(a.poll);
  a.state = "running";
  a.ready_s = Math.round(Number(process.hrtime.bigint() - a.t0) / 1e6) / 1000;
  for (const reply of a.waiters.splice(0)) {
    reply({ ok: true, pid: a.pid, state: "running", ready_s: a.ready_s, cold: a.cold });
  }
  setImmediate(refill);
}

function appStatus(a) {
  const st = {};
  for (const k of ["pid", "port", "kind", "dir", "entry", "state", "code", "signal", "started",
    "ended", "ready_s", "cold", "log"]) st[k] = a[k] ?? null;
  if (a.state !== "exited") Object.assign(st, memory(a.pid));
  return st;
}

/**
 * The script to run: the image's runner for `kind` if it has one, else
 * `entry` if given, else package.json main, else a usual name.
 */
function findEntry(dir, entry, kind) {
  if (!["node", "express", "auto", undefined].includes(kind)) {
    const runner = path.join(RUNNERS, `${kind}.js`);
    if (!fs.existsSync(runner)) throw new Error(`this image cannot run ${kind} apps (no ${runner})`);
    return runner;
  }
  if (entry) return entry;
  try {
    const main = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).main;
    if (typeof main === "string" && main) return main;
  } catch (e) {
    // no or unreadable package.json
  }
  const found = ENTRY_CANDIDATES.find((f) => fs.existsSync(path.join(dir, f)));
  if (!found) throw new Error(`no entry given and no ${ENTRY_CANDIDATES.slice(0, 4).join(", ")} in ${dir}`);
  return found;
}

/** Identifies an upload: the agent moves a new folder into place on every deploy. */
function folderKey(dir) {
  const st = fs.statSync(dir);
  return `${st.dev}:${st.ino}:${st.mtimeMs}`;
}

/** Moves <log> to <log>.1 and makes the worker's own log file the app's. */
function takeOverLog(w, logPath) {
  fs.mkdirSync(path.dirname(logPath), { recursive: true });
  try {
    fs.renameSync(logPath, `${logPath}.1`);
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
  }
  fs.renameSync(w.log, logPath);
  fs.truncateSync(logPath, 0);
  w.log = logPath;
}

function start(req, reply) {
  const { name, port } = req;
  if (typeof name !== "string" || !NAME_RE.test(name)) {
    return reply({ ok: false, error: "bad or missing name" });
  }
  if (!Number.isInteger(port) || port < 1024 || port > 65535) {
    return reply({ ok: false, error: "bad or missing port" });
  }
  const dir = typeof req.dir === "string" ? req.dir : "";
  if (!dir || !fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
    return reply({ ok: false, error: `no folder ${JSON.stringify(req.dir ?? null)}` });
  }
  let entry;
  try {
    entry = findEntry(dir, req.entry, req.kind);
  } catch (e) {
    return reply({ ok: false, error: e.message });
  }
  if (!fs.existsSync(path.resolve(dir, entry))) {
    return reply({ ok: false, error: `no ${entry} in ${dir}` });
  }
  const old = apps.get(name);
  if (old && old.state !== "exited") {
    if (old.stopping) {
      // A redeploy: start as soon as the old process is gone (<= 5 s).
      old.onExit.push(() => start(req, reply));
      return undefined;
    }
    return reply({ ok: false, error: `${name} is running (pid ${old.pid})`, ...appStatus(old) });
  }
  for (const other of apps.values()) {
    if (other.name !== name && other.port === port && other.state !== "exited") {
      return reply({ ok: false, error: `port ${port} is used by ${other.name}` });
    }
  }
  const env = {};
  for (const [k, v] of Object.entries(req.env || {})) env[String(k)] = String(v);
  const prefix = req.prefix || `/app/${name}`;
  const appEnv = { NODE_ENV: "production", ...env, PORT: String(port), APPSERVER_PREFIX: prefix };
  if (env.PORT && env.PORT !== String(port)) log(`${name}: env PORT ${env.PORT} ignored, using ${port}`);

  // The same upload ended before it listened last time: a crash loop (the
  // agent restarts crashed apps). Its restarts get a cold worker at nice 19
  // instead of using up the warm ones, which then stay for other apps; a
  // redeploy (a new folder) gets a warm worker again.
  const dirKey = folderKey(dir);
  const looping = Boolean(old && old.state === "exited" && old.ready_s === null &&
    !old.stopping && old.dirKey === dirKey);
  // One that is not warming up again after a restore, if there is one.
  const idle = [...workers.values()].filter((x) => x.state === "idle" && !x.cold);
  let w = looping ? null : idle.find((x) => !x.heating) || idle[0];
  if (!w && !looping) {
    // None idle (quick deploys used them up): a refill that has loaded its
    // modules only lacks its warm-up requests, which it can skip. One that
    // is still loading is not taken: after a restore that takes longer than
    // a cold worker, which loads only what the app needs.
    w = [...workers.values()].find((x) => x.state === "warming" && !x.cold && x.preloaded) ?? null;
    if (w) hurry(w);
  }
  const cold = !w;
  if (cold) w = spawnWorker({ cold: true, nice: looping });
  w.state = "busy";
  w.app = name;
  const a = {
    name, pid: w.pid, port, kind: req.kind || "auto", dir, entry, state: "starting",
    code: null, signal: null, started: Date.now() / 1000, ended: null, ready_s: null, cold,
    log: req.log || `${LOG_DIR}/${name}.log`, t0: process.hrtime.bigint(), waiters: [],
    onExit: [], stopping: false, dirKey,
  };
  apps.set(name, a);
  const run = (err) => {
    if (err) return; // onWorkerExit answers the waiters
    try {
      takeOverLog(w, a.log);
    } catch (e) {
      log(`${name}: log ${a.log}: ${e.message}`);
    }
    w.child.send({ type: "run", name, dir, entry, env: appEnv, prefix });
    // In case the app listens some way the worker cannot see (a child process).
    a.poll = setInterval(() => {
      if (portListens(port)) markRunning(a);
    }, 500);
  };
  if (w.load_ms !== undefined) run();
  else w.onReady = run;
  if (req.wait) a.waiters.push(reply);
  else reply({ ok: true, pid: a.pid, state: "starting", cold });
  // Refill the pool without making this start wait for it: once the app
  // listens or has ended, or after 3 s (spawning forks this process, which
  // takes a while in the emulator).
  setTimeout(refill, 3000);
  return undefined;
}

function stop(req, reply) {
  const a = apps.get(req.name);
  if (!a) return reply({ ok: false, error: "no such app" });
  if (a.state !== "exited" && !a.stopping) {
    a.stopping = true;
    try {
      process.kill(-a.pid, "SIGTERM");
    } catch (e) {
      // already gone
    }
    a.killTimer = setTimeout(() => {
      try {
        process.kill(-a.pid, "SIGKILL");
      } catch (e) {
        // already gone
      }
    }, STOP_GRACE_MS);
  }
  if (req.wait && a.state !== "exited") {
    a.onExit.push(() => reply({ ok: true, pid: a.pid, code: a.code, signal: a.signal }));
    return undefined;
  }
  return reply({ ok: true, pid: a.pid });
}

function proxyConf(name, port) {
  return `# Written by node-pool (temporary, for tests) for app ${name}.
location = /app/${name} { return 301 /app/${name}/; }
location /app/${name}/ {
    # The app sees paths without the prefix; redirects to "/x" come back as
    # /app/${name}/x (ones that already carry the prefix stay as they are).
    proxy_pass http://127.0.0.1:${port}/;
    proxy_redirect /app/${name}/ /app/${name}/;
    proxy_redirect / /app/${name}/;
    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $http_connection;
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Prefix /app/${name};
    proxy_buffering off;
    add_header X-Appserver-App ${name} always;
    add_header X-Appserver-Upstream ${port} always;
}
`;
}

/** Resolves true once the running nginx routes /app/<name>/ to the port. */
function nginxProxies(name, port) {
  return new Promise((resolve) => {
    const s = net.connect(80, "127.0.0.1");
    let head = "";
    const done = (v) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(2000, () => done(false));
    s.on("error", () => done(false));
    s.on("data", (d) => {
      head += d.toString("latin1");
      if (head.includes("\r\n\r\n")) done(head.toLowerCase().includes(`\r\nx-appserver-upstream: ${port}\r\n`));
    });
    s.on("end", () => done(false));
    s.write(`HEAD /app/${name}/ HTTP/1.0\r\nHost: localhost\r\n\r\n`);
  });
}

async function proxy(req, reply) {
  const { name, port } = req;
  if (typeof name !== "string" || !NAME_RE.test(name) || !Number.isInteger(port)) {
    return reply({ ok: false, error: "bad name or port" });
  }
  const file = `/etc/nginx/apps/${name}.conf`;
  fs.writeFileSync(`${file}.tmp`, proxyConf(name, port));
  fs.renameSync(`${file}.tmp`, file);
  const status = await new Promise((resolve) => {
    childProcess.execFile("/usr/sbin/nginx", ["-s", "reload"], (err) => resolve(err ? err.code ?? 1 : 0));
  });
  if (status !== 0) return reply({ ok: false, nginx_status: status, error: "nginx -s reload failed" });
  // The reload is asynchronous: old workers answer until the new ones run.
  const deadline = Date.now() + 10000;
  while (!(await nginxProxies(name, port))) {
    if (Date.now() > deadline) return reply({ ok: false, error: "nginx did not pick up the snippet in 10 s" });
    await new Promise((r) => setTimeout(r, 50));
  }
  return reply({ ok: true, nginx_status: 0 });
}

function poolStatus() {
  const { idle, warming } = counts();
  return {
    pid: process.pid, ...memory(process.pid), warm: opts.warm, idle, warming,
    workers: [...workers.values()].filter((w) => w.state !== "busy")
      .map((w) => ({ pid: w.pid, state: w.state, cold: w.cold, ...memory(w.pid) })),
  };
}

function handle(line, reply) {
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    return reply({ ok: false, error: `bad JSON: ${e.message}` });
  }
  try {
    switch (req && req.op) {
      case "start": return start(req, reply);
      case "stop": return stop(req, reply);
      case "status": {
        const list = {};
        for (const [name, a] of apps) list[name] = appStatus(a);
        return reply({ ok: true, apps: list, pool: poolStatus(), meminfo_kb: meminfo() });
      }
      case "ping":
        return reply({ ok: true, pid: process.pid, preloaded: PRELOADED, failed: FAILED,
          ...counts() });
      case "proxy":
        return proxy(req, reply).catch((e) => reply({ ok: false, error: String(e.message) }));
      default:
        return reply({ ok: false, error: `unknown op ${JSON.stringify(req && req.op)}` });
    }
  } catch (e) {
    return reply({ ok: false, error: `${e.name}: ${e.message}` });
  }
}

function onClient(conn) {
  let buf = "";
  let answered = false;
  const reply = (obj) => {
    if (answered) return;
    answered = true;
    conn.end(`${JSON.stringify(obj)}\n`);
  };
  conn.setEncoding("utf8");
  conn.setTimeout(2000, () => {
    if (!buf.includes("\n") && !answered) conn.destroy();
  });
  conn.on("error", () => {});
  const take = () => {
    conn.removeAllListeners("data");
    conn.setTimeout(0);
    handle(buf.split("\n", 1)[0], reply);
  };
  conn.on("data", (d) => {
    buf += d;
    if (buf.includes("\n") || buf.length > 65536) take();
  });
  conn.on("end", () => {
    if (!answered && !buf.includes("\n") && buf.trim()) take();
  });
}

function listenSerial(dev) {
  // No echo: the requests would come back on the console otherwise.
  childProcess.spawnSync("stty", ["-F", dev, "-echo"], { stdio: "ignore" });
  const tty = require("tty");
  const inFd = fs.openSync(dev, fs.constants.O_RDONLY | fs.constants.O_NOCTTY | fs.constants.O_NONBLOCK);
  const outFd = fs.openSync(dev, fs.constants.O_WRONLY | fs.constants.O_NOCTTY);
  const input = new tty.ReadStream(inFd);
  let buf = "";
  input.setEncoding("utf8");
  input.on("data", (d) => {
    buf += d;
    const lines = buf.split("\n");
    buf = lines.pop();
    for (const raw of lines) {
      const line = raw.trim();
      if (!line.startsWith("pool:")) continue;
      handle(line.slice(5), (obj) => fs.writeSync(outFd, `pool-reply: ${JSON.stringify(obj)}\n`));
    }
  });
  input.on("error", (e) => log(`serial ${dev}: ${e.message}`));
}

function poolMain(argv) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--serial") opts.serial = argv[++i];
    else if (argv[i] === "--warm") opts.warm = Math.max(0, Number(argv[++i]) || 0);
  }
  if (process.env.NODE_POOL_WARM) opts.warm = Math.max(0, Number(process.env.NODE_POOL_WARM) || 0);
  fs.rmSync(READY_FILE, { force: true });
  fs.mkdirSync(path.dirname(SOCKET), { recursive: true });
  fs.mkdirSync(LOG_DIR, { recursive: true });
  // Worker logs of an earlier run of the pool.
  for (const f of fs.readdirSync(LOG_DIR)) {
    if (f.startsWith(".worker-")) fs.rmSync(path.join(LOG_DIR, f), { force: true });
  }
  fs.rmSync(SOCKET, { force: true });
  const server = net.createServer(onClient);
  server.listen(SOCKET, () => fs.chmodSync(SOCKET, 0o600));
  server.on("error", (e) => {
    log(`${SOCKET}: ${e.message}`);
    process.exit(1);
  });
  if (opts.serial) listenSerial(opts.serial);
  const shutdown = () => {
    for (const w of workers.values()) {
      try {
        process.kill(-w.pid, "SIGTERM");
      } catch (e) {
        // gone
      }
    }
    process.exit(0);
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
  log(`loading ${opts.warm} workers`);
  refill();
  maybeReady();
  watchClock();
}

/**
 * The page sets the guest's clock right after it restores the saved state:
 * a jump of the wall clock against the monotonic one means the emulator has
 * just been restored, with none of the emulated code compiled. Then the idle
 * workers run their warm-up again (at nice 19).
 */
function watchClock() {
  let offset = Date.now() - performance.now();
  setInterval(() => {
    const now = Date.now() - performance.now();
    const jump = now - offset;
    offset = now;
    if (Math.abs(jump) < 30000) return;
    const idle = [...workers.values()].filter((w) => w.state === "idle" && !w.cold);
    log(`the clock moved by ${Math.round(jump / 1000)} s (a restore?): heating ${idle.length} idle workers`);
    for (const w of idle) {
      w.heating = true;
      w.child.send({ type: "heat" }, () => {});
    }
  }, 5000);
}

if (process.argv.includes("--worker")) {
  workerMain(process.argv.includes("--cold"));
} else {
  poolMain(process.argv.slice(2));
}
