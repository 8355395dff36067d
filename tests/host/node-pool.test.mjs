// The nodejs image's warm pool (node-pool.js) run on this host with the
// host's Node.js: what its protocol promises about stopping and redeploying,
// timed with apps that take their time to end. The same file runs in the VM
// in every nodejs and nextjs test; here each step can be watched.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

const POOL = new URL("../../images/envs/nodejs.rootfs/usr/local/lib/appserver/node-pool.js", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "node-pool-test-"));
const runDir = join(work, "run");
const logDir = join(work, "log");
let pool;

/** One request to the pool, one answer. */
function call(request) {
  return new Promise((resolve, reject) => {
    const s = connect(join(runDir, "pool.sock"));
    let text = "";
    s.on("error", reject);
    s.on("data", (d) => { text += d; });
    s.on("end", () => {
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new Error(`unreadable answer ${JSON.stringify(text)}`));
      }
    });
    s.write(`${JSON.stringify(request)}\n`);
  });
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function idleWorkers(n) {
  for (let i = 0; i < 300; i++) {
    try {
      if ((await call({ op: "ping" })).idle >= n) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`the pool has no ${n} idle workers after 30 s`);
}

/** A free TCP port on 127.0.0.1. */
function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * An app folder whose server answers `body` and, told to stop, takes
 * `exitMs` to end (as an app that finishes its work first would).
 */
function app(name, body, exitMs) {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, "server.js"), `
const http = require("http");
http.createServer((req, res) => res.end(${JSON.stringify(body)})).listen(process.env.PORT);
process.on("SIGTERM", () => setTimeout(() => process.exit(0), ${exitMs}));
`);
  return dir;
}

const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

before(async () => {
  pool = spawn(process.execPath, [POOL, "--warm", "2"], {
    env: { ...process.env, NODE_POOL_RUN_DIR: runDir, NODE_POOL_LOG_DIR: logDir },
    stdio: ["ignore", "ignore", "inherit"],
  });
  await idleWorkers(2);
});

after(() => {
  pool?.kill("SIGTERM");
  rmSync(work, { recursive: true, force: true });
});

test("a redeploy's new process loads at once and takes the port when the old one lets go", async () => {
  const port = await freePort();
  const v1 = app("v1", "one", 1500);
  const v2 = app("v2", "two", 0);
  const first = await call({ op: "start", name: "demo", dir: v1, port, kind: "node", wait: true });
  assert.equal(first.state, "running", JSON.stringify(first));
  assert.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), "one");
  await idleWorkers(2);

  const t0 = Date.now();
  const stopping = await call({ op: "stop", name: "demo", wait: true, replace: true });
  assert.equal(stopping.replacing, true, JSON.stringify(stopping));
  assert.ok(Date.now() - t0 < 1000, "a stop for a redeploy answers before the process has ended");
  assert.ok(alive(first.pid), "the old version is still ending");
  const second = await call({ op: "start", name: "demo", dir: v2, port, kind: "node", wait: true });
  const took = Date.now() - t0;
  assert.equal(second.state, "running", JSON.stringify(second));
  assert.equal(second.cold, false, "a warm worker");
  assert.ok(!alive(first.pid), "running only once the old version has ended");
  assert.ok(took >= 1400, `the new version waited for the port (${took} ms)`);
  assert.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), "two");
  // Its listen was held back, not refused: one clean start, no crash.
  const log = readFileSync(join(logDir, "demo.log"), "utf8");
  assert.doesNotMatch(log, /EADDRINUSE/);
  assert.match(log, /listening on :\d+ \d+ ms after the start/);
  const { apps } = await call({ op: "status" });
  assert.equal(apps.demo.pid, second.pid);
  assert.equal(apps.demo.state, "running");

  // A plain stop with "wait" answers once the process has ended.
  const stopped = await call({ op: "stop", name: "demo", wait: true });
  assert.equal(stopped.pid, second.pid);
  assert.ok("code" in stopped && "signal" in stopped, JSON.stringify(stopped));
  assert.ok(!alive(second.pid));
});

test("a start while the app runs and was not stopped is refused", async () => {
  await idleWorkers(1);
  const port = await freePort();
  const dir = app("busy", "busy", 0);
  const started = await call({ op: "start", name: "busy", dir, port, kind: "node", wait: true });
  assert.equal(started.state, "running", JSON.stringify(started));
  const again = await call({ op: "start", name: "busy", dir, port, kind: "node", wait: true });
  assert.equal(again.ok, false);
  assert.match(again.error, /busy is running/);
  await call({ op: "stop", name: "busy", wait: true });
});
