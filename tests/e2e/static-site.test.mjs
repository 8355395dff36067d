// The static-site slice end to end: load the environment in real Chromium,
// deploy a folder through the page, and read every file back through the
// service worker from nginx inside v86.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, truncateSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  BASE, deployFolder, fetchInPage, launch, loadStatic, openServer, staticSite, vmState,
} from "./harness.mjs";

const CONTENT_TYPES = {
  html: "text/html",
  css: "text/css",
  png: "image/png",
  js: "application/javascript",
  txt: "text/plain",
  bin: "application/octet-stream",
};

describe("static environment", () => {
  let browser, context, page, site;

  before(async () => {
    site = staticSite();
    browser = await launch();
    context = await browser.newContext();
    page = await openServer(context);
  });

  after(async () => {
    await browser?.close();
  });

  test("an app request before any environment is loaded answers 503 with what to do", async () => {
    const r = await fetchInPage(page, "/app/site/");
    assert.equal(r.status, 503);
    assert.equal(r.error, "not_running");
    assert.match(r.text, /load an environment|No environment is loaded/i);
  });

  test("loading shows progress and ends ready; a request while starting waits, then answers", async () => {
    const seen = [];
    await page.exposeFunction("recordState", (s) => seen.push(s));
    await page.evaluate(() => {
      new MutationObserver(() => window.recordState(document.body.dataset.vmState))
        .observe(document.body, { attributes: true, attributeFilter: ["data-vm-state"] });
    });
    await page.click("#load-static");
    const during = await fetchInPage(page, "/app/nothing-here/");
    const stateAfter = await vmState(page);
    if (stateAfter === "ready") {
      // The boot beat the bridge's wait: the request was answered by the real app table.
      assert.equal(during.status, 404);
    } else {
      assert.equal(during.status, 503, during.text);
      assert.match(during.text, /still starting/);
    }
    await loadStatic(page);
    assert.ok(seen.includes("loading"), `states seen: ${seen}`);
    // The image ships a warm state: the VM is restored, never booted.
    assert.ok(seen.includes("restoring"), `states seen: ${seen}`);
    assert.ok(!seen.includes("booting"), `states seen: ${seen}`);
    const progress = await page.$eval("#load-progress", (p) => p.value / p.max);
    assert.equal(progress, 1);
  });

  test("a folder deployed through the page is served byte for byte under /app/site/", async () => {
    const result = await deployFolder(page, "site", site.dir);
    assert.equal(result.state, "done", result.text);
    assert.match(result.text, new RegExp(`${site.files.length} files`));
    for (const file of site.files) {
      const url = "/app/site/" + file.path.split("/").map(encodeURIComponent).join("/");
      const r = await fetchInPage(page, url);
      assert.equal(r.status, 200, `${url}: ${r.text}`);
      assert.equal(r.sha256, file.sha256, `${url} bytes differ`);
      const ext = file.path.split(".").pop();
      assert.ok(r.contentType?.startsWith(CONTENT_TYPES[ext]), `${url}: ${r.contentType}`);
    }
    const listed = await page.$$eval("#apps li[data-app]", (items) => items.map((i) => i.dataset.app));
    assert.deepEqual(listed, ["site"]);
  });

  test("the same app answers under a project prefix", async () => {
    for (const file of site.files) {
      const url = "/default/app/site/" + file.path.split("/").map(encodeURIComponent).join("/");
      const r = await fetchInPage(page, url);
      assert.equal(r.status, 200, url);
      assert.equal(r.sha256, file.sha256, `${url} bytes differ`);
    }
  });

  test("folder URLs without a slash redirect under the prefix the browser used", async () => {
    const bare = await fetchInPage(page, "/app/site");
    assert.ok(bare.redirected);
    assert.equal(new URL(bare.url).pathname, "/app/site/");
    assert.match(bare.text, /Hello from nginx in the VM/);
    const nested = await fetchInPage(page, "/proj1/app/site/docs/guide");
    assert.ok(nested.redirected);
    assert.equal(new URL(nested.url).pathname, "/proj1/app/site/docs/guide/");
    assert.match(nested.text, /Nested guide page/);
  });

  test("a page navigated to in another tab renders with its assets", async () => {
    const tab = await context.newPage();
    await tab.goto(`${BASE}/app/site/`);
    assert.equal(await tab.textContent("#greeting"), "Hello from nginx in the VM");
    await tab.waitForFunction(() => document.body.dataset.scriptRan === "yes");
    const color = await tab.$eval("h1", (h) => getComputedStyle(h).color);
    assert.equal(color, "rgb(11, 122, 83)");
    const imgWidth = await tab.$eval("img", (i) => i.complete && i.naturalWidth);
    assert.equal(imgWidth, 32);
    await tab.close();
  });

  test("apps keep answering after the browser stops and restarts the service worker", async () => {
    const cdp = await context.newCDPSession(page);
    const statuses = [];
    cdp.on("ServiceWorker.workerVersionUpdated", ({ versions }) => {
      for (const v of versions) statuses.push(v.runningStatus);
    });
    await cdp.send("ServiceWorker.enable");
    await cdp.send("ServiceWorker.stopAllWorkers");
    for (let i = 0; i < 50 && !statuses.includes("stopped"); i++) await page.waitForTimeout(100);
    assert.ok(statuses.includes("stopped"), `the worker was stopped (saw ${statuses})`);
    // The restarted worker has no port: it asks the page for the bridge again.
    const r = await fetchInPage(page, "/app/site/css/main.css");
    assert.equal(r.status, 200, r.text);
    assert.equal(r.sha256, site.files.find((f) => f.path === "css/main.css").sha256);
    assert.equal(statuses.at(-1), "running", `the worker runs again (saw ${statuses})`);
    await cdp.detach();
  });

  test("the page says what the browser stores", async () => {
    const text = await page.textContent("#storage");
    assert.match(text, /^[\d.]+ MiB used \(image cache [\d.]+ MiB, saved VM and apps [\d.]+ (MiB|kB)\) of [\d.]+ MiB available/);
    const usage = Number(await page.$eval("#storage", (el) => el.dataset.usage));
    assert.ok(usage > 1e6, `usage ${usage} counts the cached image and the saved VM`);
  });

  test("unknown apps and impossible names answer 404 pages", async () => {
    const unknown = await fetchInPage(page, "/app/nope/");
    assert.equal(unknown.status, 404);
    assert.equal(unknown.error, "unknown_app");
    assert.match(unknown.text, /No app named `nope`/);
    const bad = await fetchInPage(page, "/app/Bad_Name/");
    assert.equal(bad.status, 404);
    assert.match(bad.text, /lowercase letters/);
    const missing = await fetchInPage(page, "/app/site/no-such-file.css");
    assert.equal(missing.status, 404);
    assert.equal(missing.error, null, "a 404 from nginx itself is passed through");
  });

  test("ten concurrent requests all get the right bytes", async () => {
    const wanted = site.files.slice(0, 10);
    while (wanted.length < 10) wanted.push(site.files[wanted.length % site.files.length]);
    const results = await page.evaluate(async (paths) => {
      const all = await Promise.all(paths.map(async (p) => {
        const r = await fetch("/app/site/" + p.split("/").map(encodeURIComponent).join("/"));
        const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await r.arrayBuffer()));
        return { status: r.status, sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join("") };
      }));
      return all;
    }, wanted.map((f) => f.path));
    results.forEach((r, i) => {
      assert.equal(r.status, 200);
      assert.equal(r.sha256, wanted[i].sha256, wanted[i].path);
    });
  });

  test("bad deploys are refused with a clear message and lose nothing", async () => {
    const badName = await deployFolder(page, "Not Valid", site.dir);
    assert.equal(badName.state, "error");
    assert.match(badName.text, /lowercase letters/);

    const reserved = await deployFolder(page, "api", site.dir);
    assert.equal(reserved.state, "error");
    assert.match(reserved.text, /reserved/);

    const huge = mkdtempSync(join(tmpdir(), "appserver-huge-"));
    writeFileSync(join(huge, "index.html"), "<h1>huge</h1>");
    writeFileSync(join(huge, "video.bin"), "");
    truncateSync(join(huge, "video.bin"), 200 * 1024 * 1024);
    const started = Date.now();
    const tooBig = await deployFolder(page, "site", huge);
    assert.equal(tooBig.state, "error");
    assert.match(tooBig.text, /upload limit is 64 MiB/);
    assert.ok(Date.now() - started < 10_000, "the refusal must not read the 200 MB file");

    const empty = mkdtempSync(join(tmpdir(), "appserver-empty-"));
    mkdirSync(join(empty, "sub"));
    const none = await deployFolder(page, "site", empty).catch((e) => ({ state: "error", text: String(e) }));
    assert.equal(none.state, "error");
    assert.match(none.text, /empty|no files/i);

    // The deployed site is untouched by all of that.
    const r = await fetchInPage(page, "/app/site/index.html");
    assert.equal(r.status, 200);
    assert.equal(r.sha256, site.files.find((f) => f.path === "index.html").sha256);
  });
});
