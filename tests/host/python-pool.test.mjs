// The python image's warm pool (python-pool.py) run by the host's python3:
// the supervisor's view of a crash loop. Only the standard library is
// needed: the frameworks the pool preloads in the image are reported as
// missing here and otherwise ignored.
//
//   node --test tests/host/python-pool.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  existsSync, mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync,
} from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const POOL = fileURLToPath(new URL(
  "../../images/envs/python.rootfs/usr/local/lib/appserver/python-pool.py", import.meta.url));

/** Sends one request to the pool at `socket` and resolves with its answer. */
function call(socket, request, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const conn = createConnection(socket);
    let data = "";
    const timer = setTimeout(() => {
      conn.destroy();
      reject(new Error(`no answer to ${request.op} in ${timeoutMs} ms`));
    }, timeoutMs);
    conn.on("connect", () => conn.write(JSON.stringify(request) + "\n"));
    conn.on("data", (chunk) => { data += chunk; });
    conn.on("error", (e) => { clearTimeout(timer); reject(e); });
    conn.on("close", () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(data));
      } catch (e) {
        reject(new Error(`unreadable answer to ${request.op}: ${JSON.stringify(data)}`));
      }
    });
  });
}

/** Starts python-pool.py in a scratch folder; resolves once it is ready. */
async function startPool({ dir = mkdtempSync(join(tmpdir(), "python-pool-")) } = {}) {
  const run = join(dir, "run");
  const logs = join(dir, "log");
  rmSync(join(run, "python-pool.ready"), { force: true }); // an earlier pool's
  const proc = spawn("python3", [POOL], {
    env: { ...process.env, PYTHON_POOL_RUN_DIR: run, PYTHON_POOL_LOG_DIR: logs },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  proc.stdout.on("data", (c) => { output += c; });
  proc.stderr.on("data", (c) => { output += c; });
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 30_000;
  while (!existsSync(join(run, "python-pool.ready"))) {
    if (proc.exitCode !== null) throw new Error(`the pool exited at start:\n${output}`);
    if (Date.now() > deadline) throw new Error(`the pool was not ready in 30 s:\n${output}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    dir, logs, socket: join(run, "pool.sock"), proc, exited,
    output: () => output,
    async close() {
      proc.kill("SIGTERM");
      await exited;
      // A SIGTERM ends the pool, not its apps: end those it still records.
      const pids = join(run, "python-pool.apps");
      for (const f of existsSync(pids) ? readdirSync(pids) : []) {
        try {
          process.kill(-Number(readFileSync(join(pids, f), "utf8")), "SIGKILL");
        } catch { /* ended already */ }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test("an app that exits at once, started again and again, leaves the pool answering", async () => {
  const pool = await startPool();
  try {
    const app = join(pool.dir, "apps", "crash");
    mkdirSync(app, { recursive: true });
    writeFileSync(join(app, "app.py"), 'import sys\nprint("failing on purpose")\nsys.exit(3)\n');
    // The child's exit closes its ready pipe and raises SIGCHLD at about
    // the same moment; the pool must cope with either order and with both
    // in one wake-up.
    for (let round = 1; round <= 25; round++) {
      const answer = await call(pool.socket, {
        op: "start", name: "crash", dir: app, port: 9501, kind: "wsgi", wait: true,
      });
      assert.equal(pool.proc.exitCode, null, `the pool died in round ${round}:\n${pool.output()}`);
      assert.equal(answer.ok, false, JSON.stringify(answer));
      assert.match(answer.error, /exited before listening \(exited with code 3/);
      const status = await call(pool.socket, { op: "status" });
      assert.equal(status.ok, true, `round ${round}: ${JSON.stringify(status)}`);
      assert.equal(status.apps.crash.state, "exited");
      assert.equal(status.apps.crash.code, 3);
    }
    const log = readFileSync(join(pool.logs, "crash.log"), "utf8");
    assert.match(log, /failing on purpose/);
    assert.match(log, /\[pool\] crash exited with code 3/);
    assert.equal((await call(pool.socket, { op: "ping" })).ok, true);
  } finally {
    await pool.close();
  }
});

test("a start without waiting, then the exit seen by status", async () => {
  const pool = await startPool();
  try {
    const app = join(pool.dir, "apps", "quick");
    mkdirSync(app, { recursive: true });
    writeFileSync(join(app, "app.py"), "raise SystemExit(5)\n");
    for (let round = 1; round <= 10; round++) {
      const answer = await call(pool.socket, {
        op: "start", name: "quick", dir: app, port: 9502, kind: "wsgi", wait: false,
      });
      assert.equal(answer.ok, true, JSON.stringify(answer));
      let state;
      const deadline = Date.now() + 10_000;
      do {
        await new Promise((r) => setTimeout(r, 20));
        state = (await call(pool.socket, { op: "status" })).apps.quick;
      } while (state.state !== "exited" && Date.now() < deadline);
      assert.equal(state.state, "exited", `round ${round}: ${JSON.stringify(state)}`);
      assert.equal(state.code, 5);
    }
    assert.equal(pool.proc.exitCode, null, pool.output());
  } finally {
    await pool.close();
  }
});

test("the exit of an app seen twice at once (its ready pipe and SIGCHLD)", async () => {
  const pool = await startPool();
  try {
    const app = join(pool.dir, "apps", "both");
    mkdirSync(app, { recursive: true });
    writeFileSync(join(app, "app.py"), "import time\ntime.sleep(0.3)\nraise SystemExit(4)\n");
    for (let round = 1; round <= 3; round++) {
      const answer = await call(pool.socket, {
        op: "start", name: "both", dir: app, port: 9504, kind: "wsgi", wait: false,
      });
      assert.equal(answer.ok, true, JSON.stringify(answer));
      // Held while the app exits, the pool finds both events ready in its
      // next select(), the order in which the emulator's one CPU often has them.
      pool.proc.kill("SIGSTOP");
      await new Promise((r) => setTimeout(r, 1500));
      pool.proc.kill("SIGCONT");
      const status = await call(pool.socket, { op: "status" });
      assert.equal(pool.proc.exitCode, null, `the pool died in round ${round}:\n${pool.output()}`);
      assert.equal(status.apps.both.state, "exited", JSON.stringify(status.apps.both));
      assert.equal(status.apps.both.code, 4);
    }
  } finally {
    await pool.close();
  }
});

test("a pool started again ends the apps of the pool before it", async () => {
  const first = await startPool();
  const app = join(first.dir, "apps", "slow");
  mkdirSync(app, { recursive: true });
  // Never gets to listen: it stands for an app that is running.
  writeFileSync(join(app, "app.py"), "import time\ntime.sleep(600)\n");
  let second;
  try {
    const answer = await call(first.socket, {
      op: "start", name: "slow", dir: app, port: 9503, kind: "wsgi", wait: false,
    });
    assert.equal(answer.ok, true, JSON.stringify(answer));
    const pid = answer.pid;
    // The pool dies without a chance to clean up; its app lives on.
    first.proc.kill("SIGKILL");
    await first.exited;
    assert.doesNotThrow(() => process.kill(pid, 0), "the app outlived its pool");
    second = await startPool({ dir: first.dir });
    const deadline = Date.now() + 10_000;
    while (isRunning(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(isRunning(pid), false, `the earlier pool's app ${pid} still runs`);
    assert.match(second.output(), new RegExp(`ending slow \\(pid ${pid}\\), started by an earlier pool`));
    // The new pool can start the app again on the port.
    const again = await call(second.socket, {
      op: "start", name: "slow", dir: app, port: 9503, kind: "wsgi", wait: false,
    });
    assert.equal(again.ok, true, JSON.stringify(again));
    assert.notEqual(again.pid, pid);
  } finally {
    await (second ?? first).close();
  }
});

/** True while `pid` runs (a zombie does not count). */
function isRunning(pid) {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ").pop().split(" ")[0] !== "Z";
  } catch {
    return false;
  }
}
