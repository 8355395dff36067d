// Figures of the nextjs environment, printed by `cargo xtask bench`: cold
// start of a Next.js app built on the host (deploy done to first 200), a
// redeploy of a rebuilt one-file change to the new version, SSR page and API
// route latency and throughput through the service worker, VM memory with
// three apps, and the same build served natively (the image's own i386
// Node.js and Next.js in a chroot on this host, through the same runner) for
// the ratio.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildNextApp, deployFolder, fetchInPage, firstAnswer, fixture } from "../e2e/harness.mjs";
import { imageRootfs, newVersion, openEnvironment, printEnvironment, withNativeApp } from "./envs.mjs";

export async function benchNextjs(context, { print, percentile, latencies, throughput }) {
  const work = mkdtempSync(join(tmpdir(), "appserver-next-bench-"));
  const built = buildNextApp(fixture("nextjs/next-app"), work);
  const page = await openEnvironment(context, "nextjs", print);

  const deployed = await deployFolder(page, "next", built);
  if (deployed.state !== "done") throw new Error(`next: ${deployed.text}`);
  const first = await firstAnswer(page, "/app/next/");
  print("nextjs_deploy_to_running", deployed.agentMs / 1000, "s");
  print("nextjs_deploy_with_vm_save", deployed.ms / 1000, "s");
  print("nextjs_deploy_done_to_first_200", first.ms / 1000, "s");

  // Redeploy a build of a one-file change: from the click to the new version.
  const changed = buildNextApp(fixture("nextjs/next-app"), work, (dir) => {
    const file = join(dir, "app/page.js");
    writeFileSync(file, readFileSync(file, "utf8").replace("Hello from Next.js", "Hello again from Next.js"));
  });
  const redeployed = await deployFolder(page, "next", changed);
  if (redeployed.state !== "done") throw new Error(redeployed.text);
  const v2 = await newVersion(page, "/app/next/", "Hello again");
  print("nextjs_redeploy_to_new_version", redeployed.agentMs / 1000 + v2.ms / 1000, "s");

  const ssr = await latencies(page, "/app/next/", 30);
  const api = await latencies(page, "/app/next/api/items", 30);
  const rps = await throughput(page, "/app/next/api/items", 10, 60);
  print("nextjs_ssr_p50", percentile(ssr, 50), "ms");
  print("nextjs_ssr_p95", percentile(ssr, 95), "ms");
  print("nextjs_api_p50", percentile(api, 50), "ms");
  print("nextjs_api_p95", percentile(api, 95), "ms");
  print("nextjs_api_rps_10_concurrent", rps, "req/s");

  for (const name of ["todo", "todo2"]) {
    const more = await deployFolder(page, name, fixture("nodejs/express-api"));
    if (more.state !== "done") throw new Error(`${name}: ${more.text}`);
  }
  await page.click("#refresh-apps");
  await page.waitForFunction(() => document.getElementById("vm-status").dataset.usedKb);
  await printEnvironment(page, "nextjs", print);

  // The same build natively: the image's rootfs (i386 Node.js and Next.js)
  // in a chroot on this host, started by the same runner.
  const rootfs = imageRootfs("nextjs");
  if (rootfs) {
    const dir = join(rootfs, "tmp/bench-next");
    rmSync(dir, { recursive: true, force: true });
    cpSync(changed, dir, { recursive: true });
    const env = {
      NODE_PATH: "/usr/local/lib/node_modules:/usr/share/nodejs", NODE_ENV: "production",
      APPSERVER_PREFIX: "/app/next",
    };
    const argv = ["/bin/sh", "-c", "cd /tmp/bench-next && exec /usr/bin/node /usr/local/lib/appserver/runners/next.js"];
    await withNativeApp(context, rootfs, argv, env, "/app/next/api/items", async (native) => {
      const nativeSsr = await latencies(native, "/app/next/", 30);
      const nativeApi = await latencies(native, "/app/next/api/items", 30);
      const nativeRps = await throughput(native, "/app/next/api/items", 10, 60);
      print("native_nextjs_ssr_p50", percentile(nativeSsr, 50), "ms");
      print("native_nextjs_api_p50", percentile(nativeApi, 50), "ms");
      print("native_nextjs_api_rps_10_concurrent", nativeRps, "req/s");
      print("ratio_nextjs_ssr_p50_vm_over_native", percentile(ssr, 50) / percentile(nativeSsr, 50), "x");
      print("ratio_nextjs_api_rps_native_over_vm", nativeRps / rps, "x");
    });
    rmSync(dir, { recursive: true, force: true });
  }
  if (process.env.BENCH_NEXT_BUILD) await benchBuildInVm(page, print);
  await page.close();
  rmSync(work, { recursive: true, force: true });
}

/**
 * `next build` inside the VM, for an upload without a build: from the click
 * to the first 200 of the built app. Takes many minutes in the emulator, so
 * only with BENCH_NEXT_BUILD=1.
 */
async function benchBuildInVm(page, print) {
  const deployed = await deployFolder(page, "nextsrc", fixture("nextjs/next-app"));
  if (deployed.state !== "done") throw new Error(`nextsrc: ${deployed.text}`);
  const started = Date.now() - deployed.ms;
  for (;;) {
    const r = await fetchInPage(page, "/app/nextsrc/api/items");
    if (r.status === 200) break;
    if (r.status !== 503 || Date.now() - started > 3_600_000) {
      throw new Error(`nextsrc: ${r.status} ${r.text.slice(0, 300)}`);
    }
    await new Promise((ok) => setTimeout(ok, 10_000));
  }
  print("nextjs_build_in_vm_to_first_200", (Date.now() - started) / 1000, "s");
}
