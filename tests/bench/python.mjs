// Figures of the python environment, printed by `cargo xtask bench` after the
// static ones: app cold start (deploy done to first 200), redeploy of a
// one-file change to the new version, request latency and throughput through
// the service worker, VM memory with three apps, and the same Flask app run
// natively (the image's own i386 Python in a chroot on this host) for the
// ratio.
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { deployFolder, fixture, waitReady } from "../e2e/harness.mjs";

export async function benchPython(context, { print, percentile, latencies, throughput }) {
  const page = await context.newPage();
  await page.goto(`${process.env.APP_BASE_URL ?? "http://localhost:8080"}/application-server/`);
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
  // The profile remembers the static environment: switch as a user would
  // come back to another one, by choosing it before the page starts.
  await page.evaluate(() => localStorage.setItem("appserver.environment", "python"));
  const clicked = Date.now();
  await page.reload();
  await waitReady(page);
  print("python_first_load_to_ready", (Date.now() - clicked) / 1000, "s");

  // Cold start: from the deploy's answer to the first 200 through the SW.
  const firstOk = (url) => page.evaluate(async (url) => {
    const t = performance.now();
    for (;;) {
      const r = await fetch(url, { cache: "no-store" });
      if (r.status === 200) return { ms: performance.now() - t, text: await r.text() };
      await new Promise((ok) => setTimeout(ok, 20));
    }
  }, url);
  for (const [name, dir, url, label] of [
    ["notes", "python/flask-notes", "/app/notes/whoami", "flask"],
    ["items", "python/fastapi-items", "/app/items/items", "fastapi"],
    ["dj", "python/django-site", "/app/dj/", "django"],
  ]) {
    const deployed = await deployFolder(page, name, fixture(dir));
    if (deployed.state !== "done") throw new Error(`${name}: ${deployed.text}`);
    const first = await firstOk(url);
    // The guest answers the deploy once the app listens; the VM save follows.
    print(`python_${label}_deploy_to_running`, deployed.agentMs / 1000, "s");
    print(`python_${label}_deploy_with_vm_save`, deployed.ms / 1000, "s");
    print(`python_${label}_deploy_done_to_first_200`, first.ms / 1000, "s");
  }

  // Redeploy after changing one file: from the click to the new version.
  const changed = mkdtempSync(join(tmpdir(), "appserver-flask-v2-"));
  cpSync(fixture("python/flask-notes"), changed, { recursive: true });
  const app = join(changed, "app.py");
  writeFileSync(app, readFileSync(app, "utf8").replace('"path": request.path', '"path": request.path, "v": 2'));
  const redeployed = await deployFolder(page, "notes", changed);
  if (redeployed.state !== "done") throw new Error(redeployed.text);
  const v2 = await firstOk("/app/notes/whoami");
  if (!v2.text.includes('"v":2') && !v2.text.includes('"v": 2')) throw new Error(`old version: ${v2.text}`);
  print("python_flask_redeploy_to_new_version", (redeployed.agentMs + v2.ms) / 1000, "s");

  const vm = {};
  for (const [label, url] of [["flask", "/app/notes/whoami"], ["fastapi", "/app/items/items"]]) {
    const lat = await latencies(page, url, 40);
    const rps = await throughput(page, url, 10, 100);
    print(`python_${label}_p50`, percentile(lat, 50), "ms");
    print(`python_${label}_p95`, percentile(lat, 95), "ms");
    print(`python_${label}_rps_10_concurrent`, rps, "req/s");
    vm[label] = { p50: percentile(lat, 50), rps };
  }
  const usedKb = Number(await page.$eval("#vm-status", (el) => el.dataset.usedKb ?? "0"));
  if (usedKb) print("python_vm_memory_in_use_3_apps", usedKb / 1024, "MiB");
  const manifest = await (await fetch(`${process.env.APP_BASE_URL ?? "http://localhost:8080"}/images/python/manifest.json`)).json();
  print("python_image_disk", manifest.files.disk.size / 1e6, "MB");
  if (manifest.state) {
    print("python_warm_state_raw", manifest.state.raw_size / 1e6, "MB");
    print("python_warm_state_compressed", manifest.state.size / 1e6, "MB");
  }

  // The same Flask app natively: the image's rootfs (i386 Python, Flask) in
  // a chroot on this host, served by werkzeug as in the VM.
  const rootfs = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "appserver/work/xtask-python/rootfs");
  if (!existsSync(join(rootfs, "usr/bin/python3"))) {
    console.error(`no ${rootfs}: no native ratio printed`);
    await page.close();
    return;
  }
  cpSync(changed, join(rootfs, "tmp/bench-notes"), { recursive: true });
  const port = 18000 + Math.floor(Math.random() * 1000);
  const proc = spawn("chroot", [rootfs, "/usr/bin/python3", "-c",
    `import sys; sys.path.insert(0, "/tmp/bench-notes"); import os; os.chdir("/tmp/bench-notes")
from app import app
from werkzeug.serving import make_server, WSGIRequestHandler
class Quiet(WSGIRequestHandler):
    def log_request(self, *a, **k): pass
make_server("127.0.0.1", ${port}, app, threaded=True, request_handler=Quiet).serve_forever()`],
  { stdio: "inherit" });
  try {
    const native = await context.newPage();
    for (let i = 0; i < 100; i++) {
      try {
        await native.goto(`http://127.0.0.1:${port}/whoami`);
        break;
      } catch {
        await new Promise((ok) => setTimeout(ok, 100));
      }
    }
    const lat = await latencies(native, "/whoami", 40);
    const rps = await throughput(native, "/whoami", 10, 100);
    print("native_flask_p50", percentile(lat, 50), "ms");
    print("native_flask_rps_10_concurrent", rps, "req/s");
    print("ratio_flask_p50_vm_over_native", vm.flask.p50 / percentile(lat, 50), "x");
    print("ratio_flask_rps_native_over_vm", rps / vm.flask.rps, "x");
    await native.close();
  } finally {
    proc.kill();
  }
  await page.close();
}
