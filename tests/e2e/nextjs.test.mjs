// The nextjs environment end to end: real Chromium loads the nextjs image's
// warm VM state; a Next.js app is built on the host as its developer would
// (`npm install`, `next build` with the basePath it is served under),
// deployed through the page with its `.next` output, handed to a pool worker
// that has Next.js loaded already, and answers SSR pages and API routes
// through the service worker and nginx. An app uploaded without a build is
// built inside the VM, and says so while it is.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  buildNextApp, deployFolder, fetchInPage, fixture, launch, loadEnvironment, openServer,
} from "./harness.mjs";

describe("nextjs environment", () => {
  let browser, context, page, work, built;
  const timings = {};

  before(async () => {
    work = mkdtempSync(join(tmpdir(), "appserver-next-"));
    const t0 = Date.now();
    built = buildNextApp(fixture("nextjs/next-app"), work);
    timings.host_build_ms = Date.now() - t0;
    browser = await launch();
    context = await browser.newContext();
    page = await openServer(context);
  });

  after(async () => {
    console.log(`nextjs e2e timings: ${JSON.stringify(timings)}`);
    await browser?.close();
    rmSync(work, { recursive: true, force: true });
  });

  test("the nextjs environment loads from its warm state", async () => {
    await loadEnvironment(page, "nextjs");
    assert.equal(await page.evaluate(() => document.body.dataset.environment), "nextjs");
  });

  test("a built Next.js app: SSR pages of both routers, a dynamic route and an API route under its prefix", async () => {
    const deployed = await deployFolder(page, "next", built, "APP_MODE=e2e");
    timings.next_deploy_to_running_ms = deployed.agentMs;
    assert.equal(deployed.state, "done", deployed.text);
    assert.equal(deployed.kind, "next");
    assert.equal(deployed.appState, "running");
    assert.match(deployed.text, /Next\.js app \(package.json depends on next\)/);
    const t0 = Date.now();

    // The app's root, with and without the slash (the worker adds it, Next.js takes it off).
    const home = await fetchInPage(page, "/app/next/");
    timings.first_page_ms = Date.now() - t0;
    assert.equal(home.status, 200, home.text);
    assert.match(home.contentType, /text\/html/);
    // React separates text and values with <!-- --> in server HTML.
    const html = home.text.replaceAll("<!-- -->", "");
    assert.match(html, /<h1 id="title">Hello from Next\.js<\/h1>/);
    assert.match(html, /rendered on the server by node v\d+/);
    assert.match(html, /e2e, next\.config\.js/, "env of the deploy and of the app's own next.config.js");
    assert.match(html, /asked by Chrome/);
    assert.match(html, /href="\/app\/next\/items\/3"/, "links carry the basePath");
    const bare = await fetchInPage(page, "/app/next");
    assert.equal(bare.status, 200);
    assert.match(bare.text, /Hello from Next\.js/);

    // Client-side chunks come from the build under the prefix.
    const chunk = home.text.match(/src="(\/app\/next\/_next\/static\/[^"]+\.js)"/)?.[1];
    assert.ok(chunk, "the page loads a script from /app/next/_next/static/");
    const script = await fetchInPage(page, chunk);
    assert.equal(script.status, 200);
    assert.match(script.contentType, /javascript/);

    const item = await fetchInPage(page, "/app/next/items/3");
    assert.equal(item.status, 200);
    assert.match(item.text, /item <!-- -->3/);
    const legacy = await fetchInPage(page, "/app/next/legacy?n=21");
    assert.equal(legacy.status, 200);
    assert.match(legacy.text, /pages router says <!-- -->42/);

    const list = await fetchInPage(page, "/app/next/api/items");
    assert.equal(list.status, 200);
    assert.match(list.contentType, /application\/json/);
    assert.deepEqual(JSON.parse(list.text), { items: [{ id: 1, name: "cup" }], path: "/api/items" });
    const created = await fetchInPage(page, "/app/next/api/items", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ name: "pot" }),
    });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(JSON.parse(created.text), { id: 2, name: "pot" });
    const invalid = await fetchInPage(page, "/app/next/api/items", { method: "POST", body: "{}" });
    assert.equal(invalid.status, 400);
    const log = await fetchInPage(page, "/application-server/api/apps/next/logs");
    console.log(JSON.parse(log.text).log.split("\n").filter((l) => /\[(next|pool)\]/.test(l)).join("\n"));

    const missing = await fetchInPage(page, "/app/next/no/such/page");
    assert.equal(missing.status, 404);
    // Under a project prefix too.
    const viaProject = await fetchInPage(page, "/demo/app/next/api/items");
    assert.equal(JSON.parse(viaProject.text).items.length, 2);
  });

  test("an upload without a build is built inside the VM, and says so while it is", async () => {
    const source = join(work, "source");
    cpSync(fixture("nextjs/next-app"), source, { recursive: true });
    const deployed = await deployFolder(page, "nextsrc", source);
    assert.equal(deployed.state, "done", deployed.text);
    assert.equal(deployed.appState, "running");
    const building = await fetchInPage(page, "/app/nextsrc/");
    assert.equal(building.status, 503);
    assert.match(building.text, /This Next\.js app is being built/);
    const logs = await fetchInPage(page, "/application-server/api/apps/nextsrc/logs");
    assert.match(logs.text, /next build in \/srv\/apps\/nextsrc \(basePath \\?"\/app\/nextsrc\\?"\)/);
    // The built app above keeps answering meanwhile.
    assert.equal((await fetchInPage(page, "/app/next/api/items")).status, 200);
    // FIXME(#4): a build in the emulator takes longer than this suite can wait
    // (see the notes), so the test removes the app, and its build, here.
    const removed = await fetchInPage(page, "/application-server/api/apps/nextsrc", { method: "DELETE" });
    assert.equal(removed.status, 200, removed.text);
  });
});
