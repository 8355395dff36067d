#!/usr/bin/env node
// Saves the warm v86 state of an image built by images/build.sh, so the page
// restores a running guest (v86's `initial_state`) instead of booting Linux.
//
//   node images/warm-state.mjs OUTDIR [--timeout-s N] [--zstd-level N]
//                                     [--settle-ms N] [--keep-raw]
//
// 1. boots OUTDIR (vmlinuz, initrd.img, disk.img, manifest.json) in v86,
//    headless under Node, with the options the page uses (v86-node.mjs:
//    pageOptions), the disk loaded `async` so that only the blocks the guest
//    wrote end up in the state;
// 2. waits for APPSERVER-READY on the serial console (appserver-init has then
//    dropped the page cache and zeroed free RAM, so the state compresses
//    well), lets the guest settle, stops the CPU and saves the state;
// 3. compresses it with the host's zstd (v86's restore_state recognises the
//    zstd magic and decompresses the state itself) to OUTDIR/state.bin.zst and
//    records it in manifest.json as
//    "state": {"path", "size", "sha256", "raw_size", "v86"}.
//
// Prints boot_to_ready_s, warm_state_raw_bytes, warm_state_zst_bytes and
// zstd_s. A state restores only with the same v86 build, disk.img and
// options: it must be made again whenever any of them changes.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  loadV86,
  onSerialLine,
  pageOptions,
  readManifest,
  sleep,
  v86Version,
} from "./v86-node.mjs";

const READY_LINE = "APPSERVER-READY";

const VALUE_FLAGS = ["--timeout-s", "--zstd-level", "--settle-ms"];
const args = process.argv.slice(2);
const opts = {};
let outdir;
for (let i = 0; i < args.length; i++) {
  if (VALUE_FLAGS.includes(args[i])) opts[args[i]] = args[++i];
  else if (args[i] === "--keep-raw") opts[args[i]] = true;
  else if (!args[i].startsWith("--") && outdir === undefined) outdir = args[i];
  else outdir = null;
}
const flag = (name, dflt) => opts[name] ?? dflt;
if (!outdir) {
  console.error(
    "usage: node images/warm-state.mjs OUTDIR [--timeout-s N] [--zstd-level N]" +
      " [--settle-ms N] [--keep-raw]",
  );
  process.exit(2);
}
const TIMEOUT_MS = Number(flag("--timeout-s", 900)) * 1000;
const ZSTD_LEVEL = Number(flag("--zstd-level", 19));
const SETTLE_MS = Number(flag("--settle-ms", 1000));
const KEEP_RAW = Boolean(opts["--keep-raw"]);

const t0 = performance.now();
const ms = () => Math.round(performance.now() - t0);
const log = (msg) => process.stderr.write(`[warm-state ${String(ms()).padStart(6)} ms] ${msg}\n`);

const manifest = readManifest(outdir);
const rawPath = join(outdir, "state.bin");
const zstPath = join(outdir, "state.bin.zst");
// A state of an earlier disk.img would not restore with this one.
rmSync(zstPath, { force: true });
rmSync(rawPath, { force: true });
rmSync(`${zstPath}.partial`, { force: true });
delete manifest.state;

const V86 = await loadV86();
log(`booting ${manifest.id} ${manifest.version} (${manifest.memory_mb} MiB, v86 ${v86Version()})`);
const emulator = new V86(pageOptions(outdir, manifest));

let startedAt = null;
emulator.add_listener("emulator-started", () => {
  startedAt ??= performance.now();
});
const ready = new Promise((resolveReady, rejectReady) => {
  onSerialLine(emulator, (line) => {
    process.stderr.write(`[serial ${String(ms()).padStart(6)} ms] ${line}\n`);
    if (line.trim() === READY_LINE) resolveReady();
  });
  setTimeout(() => rejectReady(new Error(`no ${READY_LINE} after ${TIMEOUT_MS / 1000} s`)), TIMEOUT_MS);
});

let state;
try {
  await ready;
  const bootS = (performance.now() - (startedAt ?? t0)) / 1000;
  console.log(`boot_to_ready_s: ${bootS.toFixed(1)}`);
  // Let the guest finish what follows the ready line (the init's last echo,
  // a timer or two) so it sits idle in `wait` with no disk read in flight.
  await sleep(SETTLE_MS);
  await emulator.stop();
  const savedAt = performance.now();
  state = new Uint8Array(await emulator.save_state());
  log(`save_state: ${state.length} bytes in ${Math.round(performance.now() - savedAt)} ms`);
} catch (err) {
  log(`ERROR ${err.stack || err}`);
  emulator.destroy();
  process.exit(1);
}
emulator.destroy();

writeFileSync(rawPath, state);
console.log(`warm_state_raw_bytes: ${state.length}`);

// --long: one window over the whole state (~memory_mb), so identical pages
// far apart still match. -T2: the machine is shared.
const zstdAt = performance.now();
const zstd = spawnSync(
  "nice",
  ["zstd", "-q", "-f", `-${ZSTD_LEVEL}`, "--long=27", `-T${process.env.BUILD_JOBS || 2}`,
   rawPath, "-o", `${zstPath}.partial`],
  { stdio: ["ignore", "inherit", "inherit"] },
);
if (zstd.status !== 0) {
  log(`zstd failed (${zstd.status ?? zstd.signal})`);
  process.exit(1);
}
console.log(`zstd_s: ${((performance.now() - zstdAt) / 1000).toFixed(1)} (level ${ZSTD_LEVEL})`);
renameSync(`${zstPath}.partial`, zstPath);
if (!KEEP_RAW) rmSync(rawPath);

const zst = readFileSync(zstPath);
console.log(`warm_state_zst_bytes: ${zst.length}`);
manifest.state = {
  path: "state.bin.zst",
  size: statSync(zstPath).size,
  sha256: createHash("sha256").update(zst).digest("hex"),
  raw_size: state.length,
  v86: v86Version(),
};
const manifestPath = join(outdir, "manifest.json");
writeFileSync(`${manifestPath}.partial`, JSON.stringify(manifest, null, 2) + "\n");
renameSync(`${manifestPath}.partial`, manifestPath);
log(`wrote ${zstPath} and the manifest's "state"`);
process.exit(0);
