// Environments that come back: the last environment reloads by itself, and
// deployed apps survive a reload, a browser restart, a tab closed in the
// middle of a deploy, and a saved state that no longer restores.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  BASE, BOOT_TIMEOUT_MS, CHROMIUM_ARGS, deployFolder, fetchInPage, loadStatic, openDeployDialog, staticSite,
} from "./harness.mjs";

/** A browser with a profile on disk, so a second launch finds the first one's storage. */
async function openProfile(dir) {
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: CHROMIUM_ARGS,
  });
  // The worker's own lines and errors (a panic in its wasm among them).
  const watchWorker = (worker) => worker.on("console", (m) => {
    if (m.type() === "error" || m.text().startsWith("[appserver")) console.log(`[sw ${m.type()}] ${m.text()}`);
  });
  context.serviceWorkers().forEach(watchWorker);
  context.on("serviceworker", watchWorker);
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => console.error("[page error]", e.message));
  page.on("console", (m) => {
    if (m.type() === "error" || m.text().startsWith("[appserver")) console.log(m.text());
  });
  await page.goto(`${BASE}/application-server/`);
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 30_000 });
  return { context, page };
}

async function waitReady(page) {
  try {
    await page.waitForFunction(() => document.body.dataset.vmState === "ready", null, {
      timeout: BOOT_TIMEOUT_MS,
    });
  } catch (e) {
    // Say where the page stood, not only that it never got there.
    const where = await page.evaluate(() => ({
      state: document.body.dataset.vmState,
      screen: document.body.dataset.screen,
      status: document.getElementById("load-status")?.textContent,
    }));
    e.message += `\npage: ${JSON.stringify(where)}`;
    throw e;
  }
  return Number(await page.evaluate(() => document.body.dataset.readyMs));
}

async function assertServes(page, site, prefix = "/app/site/") {
  for (const file of site.files) {
    const r = await fetchInPage(page, prefix + file.path.split("/").map(encodeURIComponent).join("/"));
    assert.equal(r.status, 200, `${file.path}: ${r.text}`);
    assert.equal(r.sha256, file.sha256, `${file.path} bytes differ`);
  }
}

describe("persistence", () => {
  const profile = mkdtempSync(join(tmpdir(), "appserver-profile-"));
  const site = staticSite();
  let context, page;

  before(async () => {
    ({ context, page } = await openProfile(profile));
  });

  after(async () => {
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
  });

  test("a deploy is saved in the browser and comes back after a reload", async () => {
    await loadStatic(page);
    const result = await deployFolder(page, "site", site.dir);
    assert.equal(result.state, "done", result.text);
    assert.match(result.text, /Saved in this browser/);
    const stored = Number(await page.$eval("#deploy-status", (el) => el.dataset.stored));
    assert.ok(stored > 0, "a state was stored");
    await page.reload();
    // Nobody clicks Load: the remembered environment starts by itself.
    const readyMs = await waitReady(page);
    console.log(`# cached start to ready after reload: ${readyMs} ms`);
    await assertServes(page, site);
  });

  test("apps survive closing the browser and opening the same profile again", async () => {
    await context.close();
    ({ context, page } = await openProfile(profile));
    await waitReady(page);
    await assertServes(page, site);
    await assertServes(page, site, "/p2/app/site/");
  });

  test("closing the tab in the middle of a deploy leaves the old or the new version whole", async () => {
    const v2 = mkdtempSync(join(tmpdir(), "appserver-site-v2-"));
    cpSync(site.dir, v2, { recursive: true });
    writeFileSync(join(v2, "index.html"), "<!doctype html><h1 id=greeting>version two</h1>\n");
    writeFileSync(join(v2, "css", "main.css"), "h1 { color: rgb(1, 2, 3); }\n");
    await openDeployDialog(page);
    await page.fill("#app-name", "site");
    await page.setInputFiles("#folder-input", v2);
    await page.click("#deploy-button");
    // Give the upload a moment to be under way, then kill the whole browser.
    await page.waitForTimeout(1500);
    await context.close();
    ({ context, page } = await openProfile(profile));
    await waitReady(page);
    const index = await fetchInPage(page, "/app/site/index.html");
    const css = await fetchInPage(page, "/app/site/css/main.css");
    assert.equal(index.status, 200);
    const isNew = /version two/.test(index.text);
    if (isNew) {
      assert.match(css.text, /rgb\(1, 2, 3\)/, "new index.html with old CSS: a mix");
    } else {
      assert.equal(index.sha256, site.files.find((f) => f.path === "index.html").sha256);
      assert.equal(css.sha256, site.files.find((f) => f.path === "css/main.css").sha256);
    }
    // Whatever version survived, deploy the original again for the next tests.
    const result = await deployFolder(page, "site", site.dir);
    assert.equal(result.state, "done", result.text);
  });

  test("a saved state that no longer restores is replaced by the image's, with the apps redeployed", async () => {
    await page.evaluate(async () => {
      // gzip that decompresses to garbage v86 cannot restore, made before the
      // transaction opens (an await inside it would end the transaction).
      const garbage = new Uint8Array(4096).map((_, i) => (i * 7919) & 0xff);
      const gz = await new Response(new Blob([garbage]).stream().pipeThrough(new CompressionStream("gzip"))).blob();
      const db = await new Promise((ok, fail) => {
        const r = indexedDB.open("appserver");
        r.onsuccess = () => ok(r.result);
        r.onerror = () => fail(r.error);
      });
      const tx = db.transaction("states", "readwrite");
      const store = tx.objectStore("states");
      const request = store.get("static");
      request.onsuccess = () => store.put({ ...request.result, blob: gz }, "static");
      await new Promise((ok) => { tx.oncomplete = ok; });
    });
    await page.reload();
    await waitReady(page);
    await assertServes(page, site);
  });

  test("after clearing site data the first load starts clean", async () => {
    await page.evaluate(async () => {
      localStorage.clear();
      await new Promise((ok) => { const r = indexedDB.deleteDatabase("appserver"); r.onsuccess = r.onblocked = ok; });
    });
    await page.reload();
    await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
    assert.equal(await page.evaluate(() => document.body.dataset.vmState), "unloaded");
    await loadStatic(page);
    const r = await fetchInPage(page, "/app/site/");
    assert.equal(r.status, 404, "no app survives clearing the site's data");
  });
});
