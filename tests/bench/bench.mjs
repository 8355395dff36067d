// `cargo xtask bench`: boots the static environment in real Chromium, deploys
// the fixture site and prints figures, one `name: value unit` line each. The
// same requests against nginx running natively on this host give the
// denominator of the emulation's cost.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { BASE, CHROMIUM_ARGS, deployFolder, loadStatic, staticSite } from "../e2e/harness.mjs";
import { benchNextjs } from "./nextjs.mjs";
import { benchNodejs } from "./nodejs.mjs";
import { benchPython } from "./python.mjs";

const SMALL = "data/asset-2k.bin";
const LARGE = "data/asset-1m.bin";

function print(name, value, unit) {
  console.log(`${name}: ${typeof value === "number" ? value.toFixed(value < 10 ? 2 : 1) : value} ${unit}`);
}

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** Times sequential fetches of `url` from inside `page`, in milliseconds. */
async function latencies(page, url, count) {
  return page.evaluate(async ({ url, count }) => {
    const out = [];
    for (let i = 0; i < count; i++) {
      const t = performance.now();
      const r = await fetch(url, { cache: "no-store" });
      await r.arrayBuffer();
      if (!r.ok) throw new Error(`${url} answered ${r.status}`);
      out.push(performance.now() - t);
    }
    return out;
  }, { url, count });
}

/** Requests per second with `workers` requests in flight at once. */
async function throughput(page, url, workers, total) {
  return page.evaluate(async ({ url, workers, total }) => {
    let left = total;
    const t = performance.now();
    await Promise.all(Array.from({ length: workers }, async () => {
      while (left-- > 0) {
        const r = await fetch(url, { cache: "no-store" });
        await r.arrayBuffer();
      }
    }));
    return total / ((performance.now() - t) / 1000);
  }, { url, workers, total });
}

async function measure(page, prefix, label) {
  const small = await latencies(page, `${prefix}${SMALL}`, 60);
  const large = await latencies(page, `${prefix}${LARGE}`, 10);
  const rps = await throughput(page, `${prefix}${SMALL}`, 10, 200);
  print(`${label}_2k_p50`, percentile(small, 50), "ms");
  print(`${label}_2k_p95`, percentile(small, 95), "ms");
  print(`${label}_1m_p50`, percentile(large, 50), "ms");
  print(`${label}_1m_p95`, percentile(large, 95), "ms");
  print(`${label}_rps_10_concurrent`, rps, "req/s");
  return { small: percentile(small, 50), large: percentile(large, 50), rps };
}

async function freePort() {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** nginx from the host's Debian package serving the same folder. */
async function nativeNginx(root) {
  // nginx's workers run as www-data: let them read the fixture copy.
  spawn("chmod", ["-R", "a+rX", root]);
  await new Promise((r) => setTimeout(r, 200));
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "appserver-nginx-"));
  const conf = join(dir, "nginx.conf");
  writeFileSync(conf, `daemon off; worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log;
events {}
http { include /etc/nginx/mime.types; access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server { listen 127.0.0.1:${port}; location /app/site/ { alias ${root}/; } } }
`);
  const proc = spawn("nginx", ["-c", conf, "-p", dir], { stdio: "inherit" });
  await new Promise((r) => setTimeout(r, 500));
  return { url: `http://127.0.0.1:${port}`, stop: () => proc.kill() };
}

async function imageBytesServed() {
  return (await (await fetch(`${BASE}/__xtask/stats`)).json()).image_bytes;
}

/** The static environment's figures, and the page's own. */
async function benchStatic() {
  const manifest = await (await fetch(`${BASE}/images/static/manifest.json`)).json();
  if (manifest.state) {
    print("warm_state_raw", manifest.state.raw_size / 1e6, "MB");
    print("warm_state_compressed", manifest.state.size / 1e6, "MB");
  }
  const page = context.pages()[0] ?? (await context.newPage());
  // The site's main page must stay light: it loads no VM and no wasm.
  const mainBytes = [];
  page.on("response", async (r) => mainBytes.push(Number((await r.headerValue("content-length")) ?? 0)));
  const mainStarted = Date.now();
  await page.goto(`${BASE}/`, { waitUntil: "load" });
  print("main_page_load", (Date.now() - mainStarted) / 1000, "s");
  print("main_page_bytes", mainBytes.reduce((a, b) => a + b, 0) / 1e3, "kB");
  page.removeAllListeners("response");
  const uiStarted = Date.now();
  await page.goto(`${BASE}/application-server/`);
  await page.waitForFunction(() => document.querySelector("#env-cards [data-download-bytes]"));
  print("management_page_to_cards", (Date.now() - uiStarted) / 1000, "s");
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
  const servedBefore = await imageBytesServed();
  const clicked = Date.now();
  await loadStatic(page);
  print("first_load_to_ready", (Date.now() - clicked) / 1000, "s");
  print("first_load_downloaded", ((await imageBytesServed()) - servedBefore) / 1e6, "MB");

  const t = Date.now();
  const result = await deployFolder(page, "site", site.dir);
  if (result.state !== "done") throw new Error(`deploy failed: ${result.text}`);
  print("deploy_static_site", (Date.now() - t) / 1000, "s");
  const stored = Number(await page.$eval("#deploy-status", (el) => el.dataset.stored));
  print("persisted_state_after_deploy", stored / 1e6, "MB");

  const vm = await measure(page, "/app/site/", "sw_vm");

  // A cached start: reload, the remembered environment comes back by itself.
  const servedBeforeReload = await imageBytesServed();
  const reloaded = Date.now();
  await page.reload();
  const firstAnswer = await page.evaluate(async () => {
    const t = performance.now();
    for (;;) {
      const r = await fetch("/app/site/data/asset-2k.bin", { cache: "no-store" });
      if (r.status === 200) return performance.now() - t;
      await new Promise((ok) => setTimeout(ok, 50));
    }
  });
  await page.waitForFunction(() => document.body.dataset.vmState === "ready");
  const readyMs = Number(await page.evaluate(() => document.body.dataset.readyMs));
  print("cached_start_to_ready", readyMs / 1000, "s");
  print("cached_start_to_first_app_answer", firstAnswer / 1000, "s");
  print("reload_to_first_app_answer", (Date.now() - reloaded) / 1000, "s");
  print("cached_start_downloaded", ((await imageBytesServed()) - servedBeforeReload) / 1e6, "MB");
  const memory = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? 0);
  print("page_js_heap_after_cached_start", memory / 1e6, "MB");

  let native = null;
  try {
    const nginx = await nativeNginx(site.dir);
    const nativePage = await context.newPage();
    await nativePage.goto(`${nginx.url}/app/site/`);
    native = await measure(nativePage, "/app/site/", "native_nginx");
    nginx.stop();
  } catch (e) {
    console.error(`native nginx unavailable (${e.message}); no ratio printed`);
  }
  if (native) {
    print("ratio_2k_p50_vm_over_native", vm.small / native.small, "x");
    print("ratio_1m_p50_vm_over_native", vm.large / native.large, "x");
    print("ratio_rps_native_over_vm", native.rps / vm.rps, "x");
  }
  // One VM at a time: the static page goes before the python one opens.
  await page.close();
}

/**
 * BENCH_ONLY=nextjs (or static, python, nodejs; a comma list) prints only
 * those environments' figures; BENCH_ONLY_STATIC=1 is BENCH_ONLY=static.
 */
const ONLY = process.env.BENCH_ONLY_STATIC ? ["static"] : process.env.BENCH_ONLY?.split(",");
const want = (env) => !ONLY || ONLY.includes(env);

const site = staticSite();
const profile = mkdtempSync(join(tmpdir(), "appserver-bench-profile-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: CHROMIUM_ARGS,
});
try {
  if (want("static")) await benchStatic();
  const figures = { print, percentile, latencies, throughput };
  if (want("python")) await benchPython(context, figures);
  if (want("nodejs")) await benchNodejs(context, figures);
  if (want("nextjs")) await benchNextjs(context, figures);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
