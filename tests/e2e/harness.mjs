// Shared helpers for the browser end-to-end tests: real Chromium driven by
// playwright-core, against the server `cargo xtask test` started.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, mkdtempSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { crc32, deflateRawSync } from "node:zlib";

export const BASE = process.env.APP_BASE_URL ?? "http://localhost:8080";
const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
/** A cold boot takes about a minute on two cores; leave room for a busy machine. */
export const BOOT_TIMEOUT_MS = 300_000;

export const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: CHROMIUM_ARGS,
  });
}

/** Every file under `dir`, with its path relative to `dir`. */
export function walk(dir, base = dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...walk(path, base));
    else out.push(relative(base, path));
  }
  return out.sort();
}

export function sha256(bytes) {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Deterministic pseudo-random bytes, so a failure can be reproduced. */
export function noise(size, seed) {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * The static fixture site copied into a temporary folder, with a 2 kB and a
 * 1 MiB asset generated beside it. Returns the folder and each file's hash.
 */
export function staticSite() {
  const dir = mkdtempSync(join(tmpdir(), "appserver-site-"));
  cpSync(join(FIXTURES, "static-site"), dir, { recursive: true });
  mkdirSync(join(dir, "data"), { recursive: true });
  writeFileSync(join(dir, "data", "asset-2k.bin"), noise(2048, 7));
  writeFileSync(join(dir, "data", "asset-1m.bin"), noise(1024 * 1024, 11));
  const files = walk(dir).map((path) => ({ path, sha256: sha256(readFileSync(join(dir, path))) }));
  return { dir, files };
}

/** What the bridge's own console lines start with. */
export const BRIDGE_LOG = "[appserver bridge] ";

/** Opens the management page and waits until the service worker controls it. */
export async function openServer(context) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("[page error]", e.message));
  // The bridge's own log lines (load, deploy and save timings) go to the test output.
  page.on("console", (m) => {
    if (m.text().startsWith(BRIDGE_LOG)) console.log(m.text());
  });
  await page.goto(`${BASE}/application-server/`);
  await waitForWorker(page);
  return page;
}

/**
 * Waits until the service worker controls `page`; if it does not within
 * 60 s, the error says how far the worker got.
 */
export async function waitForWorker(page) {
  try {
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 60_000 });
  } catch (e) {
    // Say how far the worker got: registered, installing, waiting, active.
    const where = await page.evaluate(async () => {
      const r = await navigator.serviceWorker.getRegistration();
      const state = (w) => w?.state ?? "none";
      return r ? `installing ${state(r.installing)}, waiting ${state(r.waiting)}, active ${state(r.active)}` : "no registration";
    });
    const status = await page.textContent("#load-status").catch(() => "?");
    throw new Error(`${e.message}\nservice worker: ${where}; page status: ${status}`, { cause: e });
  }
}

export async function vmState(page) {
  return page.evaluate(() => document.body.dataset.vmState);
}

/** Clicks Load on the static environment and waits for ready. */
export async function loadStatic(page) {
  await loadEnvironment(page, "static");
}

/**
 * Loads environment `id` from its card and waits for ready. A page that
 * brings back the environment it remembers is loading it already: then
 * there is nothing to click.
 */
export async function loadEnvironment(page, id) {
  // The page's module sets its state at start (and, with an environment to
  // bring back, which one) before anything else can be read.
  await page.waitForFunction(() => document.body.dataset.started === "true");
  const current = await page.evaluate(() => document.body.dataset.environment);
  if (current !== id) {
    if ((await page.evaluate(() => document.body.dataset.screen)) !== "environments") {
      await page.click("#nav-environments");
    }
    await page.click(`#load-${id}`);
  }
  await waitReady(page);
}

/** Waits until the page's VM is ready. */
export async function waitReady(page) {
  await page.waitForFunction(() => document.body.dataset.vmState === "ready", null, {
    timeout: BOOT_TIMEOUT_MS,
  });
}

/**
 * Deploys `dir` as app `name` through the page's deploy dialog, as a person
 * would: open it, type the name, pick the folder, add the environment
 * variables `env` (text, KEY=value lines) as rows, press Deploy. Resolves
 * with the outcome's state (`done`, `error`, or `failed-start` for an app
 * that was deployed but did not start), the message, the detected kind and
 * the app's state, how long the deploy took in the page (`ms`, with the VM
 * save) and until the guest served the app (`agentMs`). The dialog is
 * closed again afterwards unless `keepOpen`.
 */
export async function deployFolder(page, name, dir, env = "", { keepOpen = false } = {}) {
  await openDeployDialog(page);
  // Forget the previous outcome, so the wait below sees this deploy's.
  await page.$eval("#deploy-status", (el) => { el.dataset.state = "pending"; delete el.dataset.agentMs; });
  await page.fill("#app-name", name);
  await page.$$eval("#env-rows .row", (rows) => rows.forEach((r) => r.remove()));
  for (const line of env.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    await page.click("#env-add");
    await page.fill("#env-rows .row:last-child input[name=key]", at < 0 ? line : line.slice(0, at));
    await page.fill("#env-rows .row:last-child input[name=value]", at < 0 ? "" : line.slice(at + 1));
  }
  await page.setInputFiles("#folder-input", dir);
  const started = Date.now();
  await page.click("#deploy-button");
  await page.waitForFunction(
    () => ["done", "error", "failed-start"].includes(document.getElementById("deploy-status").dataset.state),
    null,
    { timeout: 240_000 },
  );
  const ms = Date.now() - started;
  const outcome = await page.evaluate((ms) => {
    const el = document.getElementById("deploy-status");
    return {
      state: el.dataset.state, text: el.textContent, kind: el.dataset.kind, appState: el.dataset.appState,
      ms, agentMs: Number(el.dataset.agentMs ?? NaN),
    };
  }, ms);
  if (!keepOpen) await page.click("#deploy-cancel");
  return outcome;
}

/** Opens the deploy dialog from the header, unless it is open. */
export async function openDeployDialog(page) {
  if (!(await page.$eval("#deploy-dialog", (d) => d.open))) await page.click("#open-deploy");
}

/** Opens app `name`'s details dialog from its row and waits for its output. */
export async function openDetails(page, name, action = "logs") {
  await page.click(`#apps li[data-app="${name}"] button[data-action="${action}"]`);
  await page.waitForFunction((name) => document.getElementById("app-dialog").open
    && document.getElementById("logs").dataset.app === name
    && document.getElementById("logs").textContent !== "Reading the output…", name);
}

/** Closes the app details dialog. */
export async function closeDetails(page) {
  await page.click("#app-close");
}

/** The app list as the page shows it: name -> {state, kind, text}. */
export async function listedApps(page) {
  return page.$$eval("#apps li[data-app]", (items) => Object.fromEntries(items.map((i) => [
    i.dataset.app, { state: i.dataset.state, kind: i.dataset.kind, text: i.textContent },
  ])));
}

/** The path of a fixture folder. */
export function fixture(path) {
  return join(FIXTURES, path);
}

/** Fetches `url` from inside the page (through the service worker). */
export async function fetchInPage(page, url, init = {}) {
  return page.evaluate(async ({ url, init }) => {
    const started = performance.now();
    // Say which step failed, and when: the request or the body after its head.
    const response = await fetch(url, init).catch((e) => {
      throw new Error(`fetch ${url} failed after ${Math.round(performance.now() - started)} ms: ${e.message}`);
    });
    const bytes = new Uint8Array(await response.arrayBuffer().catch((e) => {
      throw new Error(`the body of ${url} (${response.status}) failed after ${Math.round(performance.now() - started)} ms: ${e.message}`);
    }));
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
    return {
      status: response.status,
      url: response.url,
      redirected: response.redirected,
      contentType: response.headers.get("content-type"),
      error: response.headers.get("x-appserver-error"),
      size: bytes.length,
      sha256: hex,
      text: bytes.length < 20000 ? new TextDecoder().decode(bytes) : "",
      ms: performance.now() - started,
    };
  }, { url, init });
}

/**
 * A ZIP archive (deflated) of `files`: [{ path, data }]. Written here rather
 * than by a tool so that tests can also make hostile archives (`../x`).
 */
export function zipOf(files) {
  const locals = [];
  const central = [];
  let offset = 0;
  for (const { path, data } of files) {
    const bytes = Buffer.from(data);
    const packed = deflateRawSync(bytes);
    const name = Buffer.from(path);
    const crc = crc32(bytes);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(8, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(packed.length, 18);
    local.writeUInt32LE(bytes.length, 22);
    local.writeUInt16LE(name.length, 26);
    locals.push(local, name, packed);
    const entry = Buffer.alloc(46);
    entry.writeUInt32LE(0x02014b50, 0);
    entry.writeUInt16LE(20, 4);
    entry.writeUInt16LE(20, 6);
    entry.writeUInt16LE(8, 10);
    entry.writeUInt32LE(crc, 16);
    entry.writeUInt32LE(packed.length, 20);
    entry.writeUInt32LE(bytes.length, 24);
    entry.writeUInt16LE(name.length, 28);
    entry.writeUInt32LE(offset, 42);
    central.push(entry, name);
    offset += local.length + name.length + packed.length;
  }
  const dir = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(files.length, 8);
  end.writeUInt16LE(files.length, 10);
  end.writeUInt32LE(dir.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, dir, end]);
}

/** The files of fixture folder `dir` as zipOf takes them, under `prefix`. */
export function filesOf(dir, prefix = "") {
  return walk(dir).map((path) => ({ path: prefix + path, data: readFileSync(join(dir, path)) }));
}

/** Asks for `url` from the page until it answers 200: the time that took and the text. */
export async function firstAnswer(page, url) {
  return page.evaluate(async (url) => {
    const t = performance.now();
    for (;;) {
      const r = await fetch(url, { cache: "no-store" });
      if (r.status === 200) return { ms: performance.now() - t, text: await r.text() };
      await new Promise((ok) => setTimeout(ok, 20));
    }
  }, url);
}

/**
 * Builds the Next.js app in `src` on the host as its developer would (`npm
 * install`, `npm run build`) in a copy under `work`, and returns a folder to
 * deploy: the sources and `.next`, without node_modules or the build cache.
 * `edit(dir)` may change the copy first.
 */
export function buildNextApp(src, work, edit = () => {}) {
  const dir = mkdtempSync(join(work, "build-"));
  cpSync(src, dir, { recursive: true });
  edit(dir);
  const run = (args) => execFileSync("npm", args, {
    cwd: dir, stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, NEXT_TELEMETRY_DISABLED: "1" },
  });
  run(["install", "--no-audit", "--no-fund", "--loglevel=error"]);
  run(["run", "build"]);
  const out = `${dir}-deploy`;
  cpSync(dir, out, { recursive: true, filter: (path) => !/[/\\](node_modules|cache)$/.test(path) });
  return out;
}
