// Figures of the python environment, printed by `cargo xtask bench` after the
// static ones: app cold start (deploy done to first 200), redeploys of a
// one-file change to the new version (p50 and max of three), request latency
// and throughput through the service worker, VM memory with three apps, and
// the same Flask app run natively (the image's own i386 Python in a chroot on
// this host) for the ratio.
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { deployFolder, firstAnswer, fixture } from "../e2e/harness.mjs";
import { imageRootfs, openEnvironment, printEnvironment, redeploys, withNativeApp } from "./envs.mjs";

export async function benchPython(context, { print, percentile, latencies, throughput }) {
  const page = await openEnvironment(context, "python", print);

  // Cold start: from the deploy's answer to the first 200 through the SW.
  const firstOk = (url) => firstAnswer(page, url);
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

  // Redeploys after changing one file: from the deploy's start to the new version.
  const times = await redeploys(page, "notes", fixture("python/flask-notes"), (dir, v) => {
    const app = join(dir, "app.py");
    writeFileSync(app, readFileSync(app, "utf8").replace('"path": request.path', `"path": request.path, "v": ${v}`));
  }, "/app/notes/whoami", (v) => new RegExp(`"v": ?${v}\\b`));
  print("python_flask_redeploy_to_new_version_p50", percentile(times, 50), "s");
  print("python_flask_redeploy_to_new_version_max", Math.max(...times), "s");
  console.log(`# python redeploys: ${times.map((t) => t.toFixed(2)).join(", ")} s`);

  const vm = {};
  for (const [label, url] of [["flask", "/app/notes/whoami"], ["fastapi", "/app/items/items"]]) {
    const lat = await latencies(page, url, 40);
    const rps = await throughput(page, url, 10, 100);
    print(`python_${label}_p50`, percentile(lat, 50), "ms");
    print(`python_${label}_p95`, percentile(lat, 95), "ms");
    print(`python_${label}_rps_10_concurrent`, rps, "req/s");
    vm[label] = { p50: percentile(lat, 50), rps };
  }
  await printEnvironment(page, "python", print);

  // The same Flask app natively: the image's rootfs (i386 Python, Flask) in
  // a chroot on this host, served by werkzeug as in the VM.
  const rootfs = imageRootfs("python");
  if (rootfs) {
    cpSync(fixture("python/flask-notes"), join(rootfs, "tmp/bench-notes"), { recursive: true });
    const serve = `import os, sys; sys.path.insert(0, "/tmp/bench-notes"); os.chdir("/tmp/bench-notes")
from app import app
from werkzeug.serving import make_server, WSGIRequestHandler
class Quiet(WSGIRequestHandler):
    def log_request(self, *a, **k): pass
make_server("127.0.0.1", int(os.environ["PORT"]), app, threaded=True, request_handler=Quiet).serve_forever()`;
    await withNativeApp(context, rootfs, ["/usr/bin/python3", "-c", serve], {}, "/whoami", async (native) => {
      const lat = await latencies(native, "/whoami", 40);
      const rps = await throughput(native, "/whoami", 10, 100);
      print("native_flask_p50", percentile(lat, 50), "ms");
      print("native_flask_rps_10_concurrent", rps, "req/s");
      print("ratio_flask_p50_vm_over_native", vm.flask.p50 / percentile(lat, 50), "x");
      print("ratio_flask_rps_native_over_vm", rps / vm.flask.rps, "x");
    });
  }
  await page.close();
}
