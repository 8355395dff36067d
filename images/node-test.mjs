#!/usr/bin/env node
// Checks the nodejs image's warm pool after a state restore: starts a fresh
// v86 in Node from the image's warm state (as restore-test.mjs does), then
//   1. waits for nginx, and pings the pool over the serial console (two idle
//      workers with express loaded are expected)
//   2. deploys an Express app through the agent (PUT /v1/apps/<name>, a
//      ustar body): the agent detects it, gives it a port, writes its nginx
//      snippet (prefix stripped) and starts it through the pool; polls GET
//      through nginx on :80 until 200
//   3. checks a JSON list, a JSON POST, a 404, a static file
//      (express.static), a redirect to "/x" that must land under
//      /app/<name>/, X-Forwarded-Prefix, NODE_ENV, require.main and the app's
//      log; the redirect and header checks again through the pool's
//      temporary "proxy" snippet
//   4. runs a second app at the same time (an ES module importing express
//      with no node_modules of its own), and measures request latency
//   5. redeploys the first app once the pool has refilled a worker, and
//      times the PUT to the first answer of the new version
//   6. deploys an app that exits at once: the pool must report it exited
//      with its code, the agent's restarts must not use up the warm workers,
//      and the other apps must keep answering
//   7. prints the pool's status with memory figures and the image sizes
//
// The pool is asked over the serial console: lines "pool: {json}" in, lines
// "pool-reply: {json}" out (node-pool.js --serial; temporary, for tests).
//
// Usage: node images/node-test.mjs OUTDIR [--timeout-s N]
// Prints restore_to_first_answer_ms, <app>_deploy_to_first_200_ms, ... and
// exits 0 when every check passed.

import { statSync } from "node:fs";
import { join } from "node:path";
import {
  guestGet,
  guestRequest,
  loadV86,
  makeTar,
  onSerialLine,
  pageOptions,
  readManifest,
  sleep,
} from "./v86-node.mjs";

const args = process.argv.slice(2);
const opts = {};
let outdir;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--timeout-s") opts[args[i]] = args[++i];
  else if (!args[i].startsWith("--") && outdir === undefined) outdir = args[i];
  else outdir = null;
}
if (!outdir) {
  console.error("usage: node images/node-test.mjs OUTDIR [--timeout-s N]");
  process.exit(2);
}
const manifest = readManifest(outdir);
if (!manifest.state) {
  console.error(`${outdir}/manifest.json has no "state": run images/warm-state.mjs first`);
  process.exit(2);
}
const TIMEOUT_MS = Number(opts["--timeout-s"] ?? 900) * 1000;

let t0 = performance.now();
const ms = () => Math.round(performance.now() - t0);
const log = (msg) => process.stderr.write(`[node-test ${String(ms()).padStart(6)} ms] ${msg}\n`);
let failed = false;
const check = (ok, what) => {
  log(`${ok ? "PASS" : "FAIL"} ${what}`);
  if (!ok) failed = true;
};
const result = (key, value) => console.log(`${key}: ${value}`);

// ------------------------------------------------------------ the fixtures --
const EXPRESS_APP = {
  "package.json": JSON.stringify({
    name: "expressdemo",
    main: "server.js",
    scripts: { start: "node server.js" },
    dependencies: { express: "^4.18.0" },
  }),
  "server.js": `const path = require("path");
const express = require("express");

const VERSION = 1;
const app = express();
const items = [{ id: 1, name: "apple" }];

app.use(express.json());
app.use(express.static(path.join(__dirname, "public")));

app.get("/api/items", (req, res) => res.json({ version: VERSION, items }));
app.post("/api/items", (req, res) => {
  const item = { id: items.length + 1, name: String(req.body.name) };
  items.push(item);
  res.status(201).json(item);
});
app.get("/info", (req, res) => res.json({
  prefix: req.get("x-forwarded-prefix") || null,
  path: req.path,
  nodeEnv: process.env.NODE_ENV,
  cwd: process.cwd(),
  isMain: require.main === module,
}));
app.get("/go", (req, res) => res.redirect("/api/items"));
app.use((req, res) => res.status(404).json({ error: "not found", path: req.path }));

if (require.main === module) {
  app.listen(process.env.PORT, () => console.log("listening on " + process.env.PORT));
}
module.exports = app;
`,
  "public/hello.txt": "hello from express.static\n",
};
const ESM_APP = {
  "package.json": JSON.stringify({ name: "esmdemo", type: "module", main: "server.js" }),
  "server.js": `import express from "express";
import { createServer } from "node:http";

const app = express();
app.get("/", (req, res) => res.json({ app: "esm", pid: process.pid, port: process.env.PORT }));
createServer(app).listen(Number(process.env.PORT), "127.0.0.1");
`,
};
const CRASH_APP = {
  "package.json": JSON.stringify({ name: "crashy", main: "server.js" }),
  "server.js": `console.error("crashy: exiting at once on purpose");
process.exit(3);
`,
};

// ---------------------------------------------------------------- helpers --
const V86 = await loadV86();
t0 = performance.now();
const emulator = new V86(
  pageOptions(outdir, manifest, { initialState: join(outdir, manifest.state.path) }),
);
const watchdog = setTimeout(() => {
  log(`TIMEOUT after ${TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, TIMEOUT_MS);

// Pool requests over the serial console, one at a time.
let pending = null;
onSerialLine(emulator, (line) => {
  if (line.startsWith("pool-reply: ")) {
    const reply = JSON.parse(line.slice("pool-reply: ".length));
    const p = pending;
    pending = null;
    p?.(reply);
  } else {
    process.stderr.write(`[serial ${String(ms()).padStart(6)} ms] ${line}\n`);
  }
});
function pool(request, timeoutMs = 180000) {
  if (pending) throw new Error("a pool request is already pending");
  return new Promise((resolvePool, rejectPool) => {
    const timer = setTimeout(() => {
      pending = null;
      rejectPool(new Error(`pool ${request.op}: no reply in ${timeoutMs} ms`));
    }, timeoutMs);
    pending = (reply) => {
      clearTimeout(timer);
      resolvePool(reply);
    };
    emulator.serial0_send(`pool: ${JSON.stringify(request)}\n`);
  });
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
const json = (got) => {
  try {
    return JSON.parse(got.text);
  } catch {
    return {};
  }
};
const agent = (method, path, body = null) =>
  guestRequest(emulator, 8081, method, path, body, { timeoutMs: 200000 });

/**
 * Deploys through the agent, which detects the Node.js app, gives it a port,
 * writes its nginx snippet and starts it through the pool (waiting until it
 * listens); then polls `path` through nginx until `until(got)` (default: not
 * a 502/503). Returns {put, got, firstMs}.
 */
async function deploy(name, files, path, { until } = {}) {
  const at = performance.now();
  const put = await agent("PUT", `/v1/apps/${name}`, makeTar(files));
  const putMs = Math.round(performance.now() - at);
  log(`PUT /v1/apps/${name} -> ${put.status} ${put.text} (${putMs} ms)`);
  check(put.status === 200, `${name}: deployed through the agent`);
  let got;
  let polls = 0;
  for (;;) {
    polls++;
    got = await guestGet(emulator, 80, path, { timeoutMs: 30000 });
    if (until ? until(got) : ![502, 503].includes(got.status)) break;
    if (performance.now() - at > 240000) break;
    await sleep(50);
  }
  const firstMs = Math.round(performance.now() - at);
  log(`${name}: GET ${path} -> ${got.status} after ${polls} poll(s)`);
  result(`${name}_put_ms`, putMs);
  result(`${name}_deploy_to_first_200_ms`, firstMs);
  return { put: json(put), got, firstMs };
}

/** The pool's record of an app (state, ready_s, cold, rss_kb, ...). */
async function poolApp(name) {
  return (await pool({ op: "status" })).apps[name];
}

async function latency(name, path, n = 20) {
  const times = [];
  for (let i = 0; i < n; i++) {
    const got = await guestGet(emulator, 80, path);
    if (got.status !== 200) check(false, `${name}: latency request ${i} -> ${got.status}`);
    times.push(got.ms);
  }
  times.sort((a, b) => a - b);
  result(`${name}_latency_ms`, `p50 ${percentile(times, 0.5).toFixed(1)} ` +
    `p95 ${percentile(times, 0.95).toFixed(1)} (n=${n}, new connection each)`);
}

/** Waits until the pool has an idle worker again; returns the ms waited. */
async function idleWorker(limitMs = 300000) {
  const at = performance.now();
  for (;;) {
    const st = await pool({ op: "status" });
    if (st.pool.idle > 0) return Math.round(performance.now() - at);
    if (performance.now() - at > limitMs) return null;
    await sleep(2000);
  }
}

const mib = (bytes) => `${(bytes / 1048576).toFixed(1)} MiB`;

/** The redirect, 404, static file and header checks of the Express app. */
async function expressChecks(tag) {
  const missing = await guestGet(emulator, 80, "/app/expressdemo/no/such/page");
  check(missing.status === 404 && json(missing).path === "/no/such/page",
    `${tag}: 404 -> ${missing.status} ${missing.text}`);
  const file = await guestGet(emulator, 80, "/app/expressdemo/hello.txt");
  check(file.status === 200 && file.text === "hello from express.static\n" &&
    /^text\/plain/.test(file.headers["content-type"] || ""),
    `${tag}: express.static hello.txt -> ${file.status} ${file.headers["content-type"]}`);
  const redirect = await guestGet(emulator, 80, "/app/expressdemo/go");
  check(redirect.status === 302 && redirect.headers.location === "/app/expressdemo/api/items",
    `${tag}: res.redirect("/api/items") -> ${redirect.status} Location ${redirect.headers.location}`);
  const followed = await guestGet(emulator, 80, redirect.headers.location || "/");
  check(followed.status === 200 && Array.isArray(json(followed).items), `${tag}: the redirect target answers`);
  const info = json(await guestGet(emulator, 80, "/app/expressdemo/info"));
  check(info.prefix === "/app/expressdemo" && info.path === "/info" && info.nodeEnv === "production" &&
    info.cwd === "/srv/apps/expressdemo" && info.isMain === true,
    `${tag}: X-Forwarded-Prefix, path, NODE_ENV, cwd, require.main ${JSON.stringify(info)}`);
}

// ------------------------------------------------------------------ checks --
try {
  const first = await guestGet(emulator, 80, "/__health", { deadlineMs: t0 + 60000 });
  result("restore_to_first_answer_ms", ms());
  check(first.status === 200, "nginx answers after the restore");
  // As the page does after a restore; the pool takes the clock's jump as
  // the sign to warm its idle workers up again.
  const clock = await agent("PUT", "/v1/clock", Buffer.from(String(Math.floor(Date.now() / 1000))));
  check(clock.status === 200, `agent sets the guest clock -> ${clock.status}`);

  const pingAt = performance.now();
  const ping = await pool({ op: "ping" });
  result("pool_ping_ms", Math.round(performance.now() - pingAt));
  check(ping.ok && ping.idle >= 2,
    `pool answers (pid ${ping.pid}, ${ping.idle} idle, ${ping.preloaded?.length} modules preloaded)`);
  if (ping.failed && Object.keys(ping.failed).length) log(`preload failures: ${JSON.stringify(ping.failed)}`);

  // -- the Express app
  const restoreToDeploy = ms();
  const ex = await deploy("expressdemo", EXPRESS_APP, "/app/expressdemo/api/items");
  result("restore_to_app_first_200_ms", restoreToDeploy + ex.firstMs);
  const port = ex.put.port;
  check(ex.put.kind === "express" && ex.put.state === "running",
    `agent: detected ${ex.put.kind}, entry ${ex.put.entry}, port ${port}, state ${ex.put.state}`);
  let st = await poolApp("expressdemo");
  result("expressdemo_pool_start_to_listening_s", st?.ready_s);
  check(st?.cold === false, `expressdemo: started in a warm worker (ready_s ${st?.ready_s})`);
  check(ex.firstMs < 3000, `expressdemo: deploy to first 200 within 3 s (${ex.firstMs} ms)`);
  let body = json(ex.got);
  check(body.version === 1 && body.items?.length === 1, `express: GET JSON list ${ex.got.text}`);

  const posted = await guestRequest(emulator, 80, "POST", "/app/expressdemo/api/items",
    Buffer.from(JSON.stringify({ name: "pear" })), { headers: { "Content-Type": "application/json" } });
  check(posted.status === 201 && json(posted).name === "pear", `express: POST JSON -> ${posted.status} ${posted.text}`);
  body = json(await guestGet(emulator, 80, "/app/expressdemo/api/items"));
  check(body.items?.some((i) => i.name === "pear"), "express: the posted item is listed");
  await expressChecks("express (agent's snippet)");
  // The same through the pool's temporary "proxy" snippet.
  const proxied = await pool({ op: "proxy", name: "expressdemo", port });
  check(proxied.ok, `pool proxy op -> ${JSON.stringify(proxied)}`);
  await expressChecks("express (pool's proxy snippet)");
  const logs = json(await agent("GET", "/v1/apps/expressdemo/logs"));
  check(/listening on \d+/.test(logs.log || ""), `express: its output is in its log (${JSON.stringify(logs.log)})`);

  // -- a second app at the same time: an ES module with no node_modules
  const esm = await deploy("esmdemo", ESM_APP, "/app/esmdemo/");
  const esmBody = json(esm.got);
  check(esm.got.status === 200 && esmBody.app === "esm" && esmBody.port === String(esm.put.port),
    `esm: ${esm.got.status} ${esm.got.text}`);
  st = await poolApp("esmdemo");
  result("esmdemo_pool_start_to_listening_s", st?.ready_s);
  check(st?.cold === false, `esmdemo: started in a warm worker (ready_s ${st?.ready_s})`);
  const again = await guestGet(emulator, 80, "/app/expressdemo/api/items");
  check(again.status === 200, "express: still answers with the second app running");

  await latency("expressdemo", "/app/expressdemo/api/items");
  await latency("esmdemo", "/app/esmdemo/");
  const nginxTimes = [];
  for (let i = 0; i < 10; i++) nginxTimes.push((await guestGet(emulator, 80, "/__health")).ms);
  nginxTimes.sort((a, b) => a - b);
  result("nginx_latency_ms", `p50 ${percentile(nginxTimes, 0.5).toFixed(1)} (n=10)`);

  let status = await pool({ op: "status" });
  result("status_two_apps", JSON.stringify(status));
  result("mem_available_two_apps_kb", status.meminfo_kb.MemAvailable);
  for (const [name, a] of Object.entries(status.apps)) result(`${name}_rss_kb`, `${a.rss_kb} (pss ${a.pss_kb})`);
  result("pool_parent_rss_kb", `${status.pool.rss_kb} (pss ${status.pool.pss_kb})`);
  for (const w of status.pool.workers) result(`worker_${w.pid}_${w.state}_rss_kb`, `${w.rss_kb} (pss ${w.pss_kb})`);

  // -- redeploy: the agent stops the old process, swaps the files, starts
  // the new version in a warm worker.
  const waited = await idleWorker();
  result("wait_for_refilled_worker_ms", waited);
  check(waited !== null, "the pool refilled a worker in the background");
  const v2 = { ...EXPRESS_APP, "server.js": EXPRESS_APP["server.js"].replace("VERSION = 1", "VERSION = 2") };
  const re = await deploy("expressdemo", v2, "/app/expressdemo/api/items",
    { until: (got) => got.status === 200 && json(got).version === 2 });
  result("redeploy_to_new_version_ms", re.firstMs);
  check(json(re.got).version === 2, "express: serves the new version");
  check(re.firstMs < 2000, `express: new version within 2 s of the PUT (${re.firstMs} ms)`);
  st = await poolApp("expressdemo");
  check(st?.cold === false && st?.state === "running", `expressdemo v2: warm worker (ready_s ${st?.ready_s})`);

  // -- an app that exits at once (the agent restarts it with backoff)
  const before = (await pool({ op: "status" })).pool;
  const crashAt = performance.now();
  const crash = await agent("PUT", "/v1/apps/crashy", makeTar(CRASH_APP));
  result("crashy_put_ms", Math.round(performance.now() - crashAt));
  log(`PUT /v1/apps/crashy -> ${crash.status} ${crash.text}`);
  // A cold worker (no idle one left) can take longer than the agent waits;
  // the agent records how the run ended (the pool's code) and restarts it.
  let crashApp;
  for (;;) {
    crashApp = json(await agent("GET", "/v1/apps/crashy"));
    if (/code 3/.test(crashApp.error || "") || performance.now() - crashAt > 240000) break;
    await sleep(2000);
  }
  result("crashy_put_to_exit_recorded_ms", Math.round(performance.now() - crashAt));
  check(/exited with code 3/.test(crashApp.error || ""),
    `crashy: exited with code 3 as the pool reported (${(crashApp.error || "").split("\n")[0]})`);
  check(/exiting at once on purpose/.test(crashApp.error || ""), "crashy: its output is in the report");
  st = await poolApp("crashy");
  check(st?.state === "exited" ? st.code === 3 : st?.cold === true,
    `crashy: pool has it exited with 3 or restarting cold (${st?.state}, code ${st?.code}, cold ${st?.cold})`);
  const crashGot = await guestGet(emulator, 80, "/app/crashy/");
  check([502, 503].includes(crashGot.status), `crashy: nginx answers ${crashGot.status}`);
  await sleep(8000); // the agent's first restarts (after 1 s, 2 s, ...)
  for (const [name, path] of [["expressdemo", "/app/expressdemo/api/items"], ["esmdemo", "/app/esmdemo/"]]) {
    const got = await guestGet(emulator, 80, path);
    check(got.status === 200, `${name}: still answers while crashy crash-loops`);
  }
  status = await pool({ op: "status" });
  crashApp = json(await agent("GET", "/v1/apps/crashy"));
  log(`agent: crashy ${JSON.stringify(crashApp)}`);
  check(["restarting", "starting", "error"].includes(crashApp.state),
    `agent: crashy is ${crashApp.state} (${crashApp.error?.split("\n")[0]})`);
  // The first start may take a warm worker; the restarts must not.
  check(status.pool.idle >= before.idle - 1,
    `pool: crash restarts did not use up the warm workers (idle ${before.idle} -> ${status.pool.idle})`);
  const again3 = status.apps.crashy;
  log(`pool: crashy ${JSON.stringify(again3)}`);
  check(again3?.state === "exited" ? again3.code === 3 : again3?.cold === true,
    `crashy: a restart runs in a cold worker or it exited with 3 (${again3?.state}, cold ${again3?.cold})`);
  result("pool_status", JSON.stringify(status));
  check(status.apps.expressdemo?.state === "running" && status.apps.esmdemo?.state === "running",
    "status: expressdemo and esmdemo running");
  const agentStatus = json(await agent("GET", "/v1/status"));
  result("agent_status", JSON.stringify(agentStatus));
  result("mem_available_end_kb", status.meminfo_kb.MemAvailable);
  result("mem_total_kb", status.meminfo_kb.MemTotal);
} catch (err) {
  log(`ERROR ${err.stack || err}`);
  failed = true;
}
const size = (f) => statSync(join(outdir, f)).size;
result("disk_img_bytes", `${size("disk.img")} (${mib(size("disk.img"))})`);
result("state_bin_zst_bytes", `${size(manifest.state.path)} (${mib(size(manifest.state.path))}, raw ${mib(manifest.state.raw_size)})`);
result("memory_mb", manifest.memory_mb);
clearTimeout(watchdog);
await emulator.destroy();
log(failed ? "RESULT: FAIL" : "RESULT: PASS");
process.exit(failed ? 1 : 0);
