#!/usr/bin/env node
// Checks the warm state of an image (made by warm-state.mjs): starts a fresh
// v86 in Node with the page's options plus `initial_state` (no kernel, initrd
// or command line), and without waiting for anything (the ready line was
// printed before the save) talks to the guest through the fetch adapter:
//   1. GET /__health from nginx (:80), retried until the guest answers
//   2. GET /v1/health from the agent (:8081)
//   3. the guest clock, from nginx's Date header, against the host's
//   4. PUT a tiny app to the agent and GET it through nginx (disk reads and
//      writes on the `async` disk after the restore)
//   5. after a few seconds of running, both health checks again
//
// Usage: node images/restore-test.mjs OUTDIR [--state PATH] [--timeout-s N]
// Prints restore_to_first_answer_ms (new V86() to nginx's first answer) and
// exits 0 when every check passed.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
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
  v86Version,
} from "./v86-node.mjs";

const args = process.argv.slice(2);
const opts = {};
let outdir;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--state" || args[i] === "--timeout-s") opts[args[i]] = args[++i];
  else if (!args[i].startsWith("--") && outdir === undefined) outdir = args[i];
  else outdir = null;
}
if (!outdir) {
  console.error("usage: node images/restore-test.mjs OUTDIR [--state PATH] [--timeout-s N]");
  process.exit(2);
}
const manifest = readManifest(outdir);
if (!opts["--state"] && !manifest.state) {
  console.error(`${outdir}/manifest.json has no "state": run images/warm-state.mjs first`);
  process.exit(2);
}
const statePath = opts["--state"] || join(outdir, manifest.state.path);
const TIMEOUT_MS = Number(opts["--timeout-s"] ?? 120) * 1000;

let t0 = performance.now();
const ms = () => Math.round(performance.now() - t0);
const log = (msg) => process.stderr.write(`[restore-test ${String(ms()).padStart(6)} ms] ${msg}\n`);
let failed = false;
const check = (ok, what) => {
  log(`${ok ? "PASS" : "FAIL"} ${what}`);
  if (!ok) failed = true;
};

if (!opts["--state"]) {
  const sum = createHash("sha256").update(readFileSync(statePath)).digest("hex");
  check(sum === manifest.state.sha256, "state.bin.zst matches the manifest's sha256");
  if (manifest.state.v86 && manifest.state.v86 !== v86Version()) {
    log(`WARNING state saved by v86 ${manifest.state.v86}, this is ${v86Version()}`);
  }
}

const V86 = await loadV86();
t0 = performance.now();
const emulator = new V86(pageOptions(outdir, manifest, { initialState: statePath }));
const marks = {};
emulator.add_listener("emulator-loaded", () => (marks.loaded ??= ms()));
emulator.add_listener("emulator-ready", () => (marks.ready ??= ms()));
emulator.add_listener("emulator-started", () => (marks.started ??= ms()));
onSerialLine(emulator, (line) => process.stderr.write(`[serial ${String(ms()).padStart(6)} ms] ${line}\n`));
const watchdog = setTimeout(() => {
  log(`TIMEOUT after ${TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, TIMEOUT_MS);

try {
  const deadlineMs = t0 + 60000;
  const first = await guestGet(emulator, 80, "/__health", { deadlineMs });
  const firstMs = ms();
  console.log(`restore_to_first_answer_ms: ${firstMs}`);
  log(
    `emulator ready at ${marks.ready} ms, started at ${marks.started} ms; ` +
      `first answer after ${first.attempts} connection attempt(s)`,
  );
  check(first.status === 200 && first.text === "ok\n", "nginx answers /__health");

  const agent = await guestGet(emulator, 8081, "/v1/health", { deadlineMs });
  log(`agent /v1/health -> ${agent.status} ${agent.text} (${Math.round(agent.ms)} ms)`);
  check(agent.status === 200 && agent.text === '{"ok":true}', "agent answers /v1/health");

  const guestDate = Date.parse(first.headers.date);
  const offsetS = Math.round((guestDate - Date.now()) / 1000);
  console.log(`guest_clock_offset_s: ${offsetS} (guest Date: ${first.headers.date})`);

  const page = `<!doctype html><p>restored ${new Date().toISOString()}</p>\n`;
  const put = await guestRequest(
    emulator, 8081, "PUT", "/v1/apps/warmcheck", makeTar({ "index.html": page }),
    { timeoutMs: 60000 },
  );
  log(`PUT /v1/apps/warmcheck -> ${put.status} ${put.text} (${Math.round(put.ms)} ms)`);
  check(put.status === 200, "deploy through the agent after restore");
  const got = await guestGet(emulator, 80, "/app/warmcheck/index.html");
  log(`GET /app/warmcheck/index.html -> ${got.status} (${Math.round(got.ms)} ms)`);
  check(got.status === 200 && got.text === page, "nginx serves the app deployed after restore");
  const redirect = await guestGet(emulator, 80, "/app/warmcheck");
  check(redirect.status === 301, "nginx redirect (reads its config from disk)");

  await sleep(5000);
  const later = await guestGet(emulator, 80, "/__health");
  const laterAgent = await guestGet(emulator, 8081, "/v1/health");
  log(`5 s later: nginx ${Math.round(later.ms)} ms, agent ${Math.round(laterAgent.ms)} ms`);
  check(later.status === 200 && laterAgent.status === 200, "both still answer 5 s later");
  const drift = Math.round((Date.parse(later.headers.date) - guestDate) / 1000);
  log(`guest clock advanced ${drift} s over ~${Math.round((ms() - firstMs) / 1000)} s`);
} catch (err) {
  log(`ERROR ${err.stack || err}`);
  failed = true;
}
clearTimeout(watchdog);
await emulator.destroy();
log(failed ? "RESULT: FAIL" : "RESULT: PASS");
process.exit(failed ? 1 : 0);
