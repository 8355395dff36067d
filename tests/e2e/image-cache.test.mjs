// Image delivery: the environment's files are fetched once, verified against
// the manifest's hashes and kept in the browser; a corrupt cached chunk is
// detected and fetched again.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { BASE, launch, loadStatic, openServer } from "./harness.mjs";

async function imageBytesServed() {
  return (await serverStats()).image_bytes;
}

/** Image bytes the server sent, and of those the ones it had sent before. */
async function serverStats() {
  const r = await fetch(`${BASE}/__xtask/stats`);
  return r.json();
}

describe("image cache", () => {
  let browser, context, page;

  before(async () => {
    browser = await launch();
    context = await browser.newContext();
    page = await openServer(context);
  });

  after(async () => {
    await browser?.close();
  });

  test("a first load downloads only part of the disk, and a second load nothing", async () => {
    // This profile is new: what other tests' profiles fetched does not count.
    assert.equal((await fetch(`${BASE}/__xtask/stats`, { method: "DELETE" })).status, 204);
    const before = await imageBytesServed();
    await loadStatic(page);
    const first = (await imageBytesServed()) - before;
    const manifest = await (await fetch(`${BASE}/images/static/manifest.json`)).json();
    const disk = manifest.files.disk.size;
    console.log(`# first load downloaded ${(first / 1e6).toFixed(1)} MB (disk is ${(disk / 1e6).toFixed(0)} MB)`);
    assert.ok(first > 0);
    assert.ok(first < disk / 2, "the disk is read lazily, not downloaded whole");
    const mid = await serverStats();
    await page.reload();
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
    // The page remembers the environment and loads it again by itself.
    await loadStatic(page);
    const end = await serverStats();
    // Only manifest.json is asked for again (it is small and says whether a
    // new build exists). The guest may read a disk block for the first time
    // now (the first VM kept running after ready), but nothing comes twice.
    const again = end.image_repeat_bytes - mid.image_repeat_bytes;
    assert.ok(again < 16 * 1024, `a cached start downloaded ${again} bytes of image again`);
    const fresh = end.image_bytes - mid.image_bytes - again;
    assert.ok(fresh < first / 4, `a cached start downloaded ${fresh} new bytes of image`);
  });

  test("a corrupt cached chunk is refetched, not used", async () => {
    const corrupted = await page.evaluate(async () => {
      const cache = await caches.open("appserver-images");
      const keys = (await cache.keys()).map((r) => new URL(r.url).pathname);
      const chunk = keys.find((k) => /\/disk\.img\/\d+$/.test(k));
      await cache.put(chunk, new Response(new Uint8Array(256 * 1024).fill(0x5a)));
      return chunk;
    });
    assert.ok(corrupted, "some disk chunk was cached");
    const index = Number(corrupted.split("/").pop());
    const manifest = await (await fetch(`${BASE}/images/static/manifest.json`)).json();
    const before = await imageBytesServed();
    // Read the corrupted chunk through the worker, as v86 would.
    const start = index * 256 * 1024;
    const got = await page.evaluate(async ({ url, start }) => {
      const r = await fetch(url, { headers: { range: `bytes=${start}-${start + 4095}` } });
      const bytes = new Uint8Array(await r.arrayBuffer());
      return { status: r.status, allZ: bytes.every((b) => b === 0x5a), length: bytes.length };
    }, { url: `/images/static/disk.img?v=${manifest.version}`, start });
    assert.equal(got.status, 206);
    assert.equal(got.length, 4096);
    assert.equal(got.allZ, false, "the corrupt bytes were served");
    assert.ok((await imageBytesServed()) - before >= 4096, "the chunk came from the network again");
    const healed = await page.evaluate(async (key) => {
      const cache = await caches.open("appserver-images");
      const r = await cache.match(key);
      const bytes = new Uint8Array(await r.arrayBuffer());
      return bytes.some((b) => b !== 0x5a);
    }, corrupted);
    assert.ok(healed, "the cache holds the good chunk again");
  });
});
