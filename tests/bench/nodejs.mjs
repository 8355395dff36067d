// Figures of the nodejs environment, printed by `cargo xtask bench` after the
// python ones: Express cold start (deploy done to first 200), redeploy of a
// one-file change to the new version, request latency and throughput through
// the service worker, VM memory with three apps, and the same Express app
// run natively (the image's own i386 Node.js in a chroot on this host) for
// the ratio.
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { deployFolder, firstAnswer, fixture } from "../e2e/harness.mjs";
import { imageRootfs, openEnvironment, poolRefilled, printEnvironment, redeploys, withNativeApp } from "./envs.mjs";

export async function benchNodejs(context, { print, percentile, latencies, throughput }) {
  const page = await openEnvironment(context, "nodejs", print);

  const deployed = await deployFolder(page, "todo", fixture("nodejs/express-api"));
  if (deployed.state !== "done") throw new Error(`todo: ${deployed.text}`);
  const first = await firstAnswer(page, "/app/todo/todos");
  print("nodejs_express_deploy_to_running", deployed.agentMs / 1000, "s");
  print("nodejs_express_deploy_with_vm_save", deployed.ms / 1000, "s");
  print("nodejs_express_deploy_done_to_first_200", first.ms / 1000, "s");

  // A redeploy after changing one file: from the deploy's start to the new
  // version. Once right after the first deploy, while the pool refills the
  // worker that took (a new node process, at nice 19, runs cold after a
  // restore), and once after the refill. Not more: a third start this soon
  // after the restore waits for a cold refill.
  const edit = (base) => (dir, v) => {
    const server = join(dir, "server.js");
    writeFileSync(server, readFileSync(server, "utf8").replace('app: "express-api"', `app: "express-api", v: ${base + v}`));
  };
  const refilled = poolRefilled(page);
  const [redeploy] = await redeploys(page, "todo", fixture("nodejs/express-api"), edit(0), "/app/todo/",
    (v) => `"v":${v}`, 1);
  print("nodejs_express_redeploy_to_new_version", redeploy, "s");
  await refilled;
  const [quiet] = await redeploys(page, "todo", fixture("nodejs/express-api"), edit(10), "/app/todo/",
    (v) => `"v":${10 + v}`, 1);
  print("nodejs_express_redeploy_once_refilled", quiet, "s");

  const lat = await latencies(page, "/app/todo/todos", 40);
  const rps = await throughput(page, "/app/todo/todos", 10, 100);
  print("nodejs_express_p50", percentile(lat, 50), "ms");
  print("nodejs_express_p95", percentile(lat, 95), "ms");
  print("nodejs_express_rps_10_concurrent", rps, "req/s");

  // Two more deploys right away: the pool's two warm workers are taken by
  // now, so these get the refills (still loading, or ready).
  for (const name of ["todo2", "todo3"]) {
    const more = await deployFolder(page, name, fixture("nodejs/express-api"));
    if (more.state !== "done") throw new Error(`${name}: ${more.text}`);
    print(`nodejs_express_${name}_deploy_to_running`, more.agentMs / 1000, "s");
  }
  await page.click("#refresh-apps");
  await page.waitForFunction(() => document.getElementById("vm-status").dataset.usedKb);
  await printEnvironment(page, "nodejs", print);

  // The same Express app natively: the image's rootfs (i386 Node.js,
  // Debian's express) in a chroot on this host.
  const rootfs = imageRootfs("nodejs");
  if (rootfs) {
    cpSync(fixture("nodejs/express-api"), join(rootfs, "tmp/bench-api"), { recursive: true });
    const env = { NODE_PATH: "/usr/share/nodejs:/usr/lib/i386-linux-gnu/nodejs", NODE_ENV: "production" };
    await withNativeApp(context, rootfs, ["/usr/bin/node", "/tmp/bench-api/server.js"], env, "/todos", async (native) => {
      const nativeLat = await latencies(native, "/todos", 40);
      const nativeRps = await throughput(native, "/todos", 10, 100);
      print("native_express_p50", percentile(nativeLat, 50), "ms");
      print("native_express_rps_10_concurrent", nativeRps, "req/s");
      print("ratio_express_p50_vm_over_native", percentile(lat, 50) / percentile(nativeLat, 50), "x");
      print("ratio_express_rps_native_over_vm", nativeRps / rps, "x");
    });
  }
  await page.close();
}
