// What the environment benches share: opening the page on an environment,
// the image's sizes, and an app run natively from the image's own rootfs
// (i386 binaries in a chroot on this host) as the ratio's denominator.
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdtempSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { BRIDGE_LOG, deployFolder, firstAnswer, waitForWorker, waitReady } from "../e2e/harness.mjs";

const BASE = process.env.APP_BASE_URL ?? "http://localhost:8080";

/**
 * Opens the management page on environment `env`, as a user who comes back
 * to it: chosen before the page starts. Prints the time to ready.
 */
export async function openEnvironment(context, env, print) {
  const page = await context.newPage();
  // The bridge's deploy lines carry the guest's own timings (receive, stop
  // of the old version, nginx, start): printed as comments.
  page.on("console", (m) => {
    const text = m.text();
    if (text.startsWith(`${BRIDGE_LOG}deployed`)) console.log(`# ${text.slice(BRIDGE_LOG.length)}`);
  });
  await page.goto(`${BASE}/application-server/`);
  // As long as the tests wait: 30 s ran out twice in one session, each time
  // in the first page of a fresh profile.
  await waitForWorker(page);
  await page.evaluate((env) => localStorage.setItem("appserver.environment", env), env);
  const clicked = Date.now();
  await page.reload();
  await waitReady(page);
  print(`${env}_first_load_to_ready`, (Date.now() - clicked) / 1000, "s");
  return page;
}

/** Prints the VM's memory in use as the page shows it, and the image's sizes. */
export async function printEnvironment(page, env, print) {
  const usedKb = Number(await page.$eval("#vm-status", (el) => el.dataset.usedKb ?? "0"));
  if (usedKb) print(`${env}_vm_memory_in_use_3_apps`, usedKb / 1024, "MiB");
  const manifest = await (await fetch(`${BASE}/images/${env}/manifest.json`)).json();
  print(`${env}_image_disk`, manifest.files.disk.size / 1e6, "MB");
  if (manifest.state) {
    print(`${env}_warm_state_raw`, manifest.state.raw_size / 1e6, "MB");
    print(`${env}_warm_state_compressed`, manifest.state.size / 1e6, "MB");
  }
}

/**
 * The rootfs the image of `env` was built from, or null (with a note) when
 * this cache has none.
 */
export function imageRootfs(env) {
  const rootfs = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), `appserver/work/xtask-${env}/rootfs`);
  if (existsSync(join(rootfs, "usr/bin"))) return rootfs;
  console.error(`no ${rootfs}: no native ratio printed`);
  return null;
}

/**
 * Runs `argv` in `rootfs` with `env` (PORT set to a free port), opens a page
 * on `path` once it answers, and hands it to `measure`; stops the server after.
 */
export async function withNativeApp(context, rootfs, argv, env, path, measure) {
  const port = 18000 + Math.floor(Math.random() * 2000);
  const proc = spawn("chroot", [rootfs, ...argv], {
    stdio: "inherit",
    env: { ...process.env, ...env, PORT: String(port) },
  });
  try {
    const native = await context.newPage();
    for (let i = 0; i < 100; i++) {
      try {
        await native.goto(`http://127.0.0.1:${port}${path}`);
        break;
      } catch {
        await new Promise((ok) => setTimeout(ok, 100));
      }
    }
    await measure(native);
    await native.close();
  } finally {
    proc.kill();
  }
}

/**
 * After a redeploy: the first 200 of `url` whose body has `marker` (a string
 * or a RegExp: the new version), asked up to 100 times; throws if the old
 * version stays.
 */
export async function newVersion(page, url, marker) {
  const isNew = (text) => (typeof marker === "string" ? text.includes(marker) : marker.test(text));
  let answer;
  for (let i = 0; i < 100; i++) {
    answer = await firstAnswer(page, url);
    if (isNew(answer.text)) return answer;
  }
  throw new Error(`old version: ${answer.text.slice(0, 300)}`);
}

/**
 * Resolves once the page says it saved the VM with the warm pool refilled
 * (the bridge waits for that after each deploy to a Node.js pool), or
 * rejects after `ms`.
 */
export function poolRefilled(page, ms = 300_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      page.off("console", listen);
      reject(new Error(`the pool did not refill within ${ms / 1000} s`));
    }, ms);
    const listen = (m) => {
      if (!m.text().startsWith(`${BRIDGE_LOG}saved the VM with its warm pool refilled`)) return;
      clearTimeout(timer);
      page.off("console", listen);
      resolve();
    };
    page.on("console", listen);
  });
}

/**
 * Redeploys app `name` `rounds` times, each from a copy of `src` that
 * `edit(dir, v)` turns into version v (2, 3, ...), and returns how long each
 * took from the deploy's start to the first 200 of `url` whose body has
 * `marker(v)`, in seconds. Each deploy waits for the VM save before the
 * next one starts, as the page does.
 */
export async function redeploys(page, name, src, edit, url, marker, rounds = 3) {
  const times = [];
  for (let v = 2; v < 2 + rounds; v++) {
    const dir = mkdtempSync(join(tmpdir(), `appserver-${name}-v${v}-`));
    cpSync(src, dir, { recursive: true });
    edit(dir, v);
    const deployed = await deployFolder(page, name, dir);
    if (deployed.state !== "done") throw new Error(`${name} v${v}: ${deployed.text}`);
    const answer = await newVersion(page, url, marker(v));
    times.push((deployed.agentMs + answer.ms) / 1000);
  }
  return times;
}
