// The management UI, clicked through as a person would in real Chromium:
// the environment cards, a load that fails on a corrupt image and its
// recovery, the dashboard, the deploy dialog (name checks, detection,
// environment variables, compatibility), app details with logs and
// requests, stop and start, and a switch of environment with its warning.
// Screenshots of each screen go to tests/output/screenshots/.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  BASE, closeDetails, deployFolder, fetchInPage, filesOf, fixture, launch, openDeployDialog,
  openDetails, openServer, sha256, staticSite, waitReady, zipOf,
} from "./harness.mjs";

const SHOTS = new URL("../output/screenshots/", import.meta.url).pathname;

describe("management UI", () => {
  let browser, context, page;
  const site = staticSite();

  const shot = async (name, target = page) => {
    await target.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  };
  const screen = () => page.evaluate(() => document.body.dataset.screen);
  const serverCorrupts = async (env, on) => {
    const r = await fetch(`${BASE}/__xtask/corrupt/${env}`, { method: on ? "POST" : "DELETE" });
    assert.equal(r.status, 204);
  };

  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    browser = await launch();
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
    page = await openServer(context);
  });

  after(async () => {
    await serverCorrupts("static", false).catch(() => {});
    await browser?.close();
  });

  test("the main page loads no VM and no wasm", async () => {
    const other = await context.newPage();
    const fetched = [];
    other.on("request", (r) => fetched.push(new URL(r.url()).pathname));
    const started = Date.now();
    await other.goto(`${BASE}/`, { waitUntil: "load" });
    const ms = Date.now() - started;
    console.log(`main page load: ${ms} ms, ${fetched.length} requests`);
    assert.ok(fetched.includes("/"));
    const heavy = fetched.filter((p) => /\.wasm$|libv86|^\/images\/|^\/pkg\//.test(p));
    assert.deepEqual(heavy, [], "the main page fetched VM or wasm files");
    await other.close();
  });

  test("no environment loaded: a card per environment with size and cache state", async () => {
    assert.equal(await screen(), "environments");
    for (const id of ["static", "nodejs", "python"]) {
      await page.waitForFunction((id) => document.getElementById(`env-cached-${id}`)?.dataset.cached, id);
      const card = await page.$eval(`#env-${id}`, (c) => ({
        text: c.textContent,
        cached: c.querySelector("[data-cached]").dataset.cached,
        bytes: Number(c.querySelector("[data-download-bytes]")?.dataset.downloadBytes ?? 0),
      }));
      assert.equal(card.cached, "false", `${id} is not cached in a new profile`);
      assert.ok(card.bytes > 1e6 && card.bytes < 60e6, `${id} download size ${card.bytes}`);
      assert.match(card.text, /MiB RAM/);
      assert.match(card.text, /then about 2 s/);
    }
    await shot("01-environments");
    await page.setViewportSize({ width: 420, height: 800 });
    await shot("01-environments-narrow");
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  test("a load that fails on a corrupt image says why, with a code, and recovers", async () => {
    await serverCorrupts("static", true);
    await page.click("#load-static");
    await page.waitForFunction(() => document.body.dataset.vmState === "error", null, { timeout: 120_000 });
    assert.equal(await screen(), "loading");
    const code = await page.textContent("#load-error-code");
    assert.equal(code, "download_failed");
    assert.match(await page.textContent("#load-error-message"), /SHA-256|checksum/);
    const details = await page.inputValue("#load-error-details");
    assert.match(details, /environment: static\ncode: download_failed/);
    await page.click("#copy-details");
    await page.waitForFunction(() => document.getElementById("copy-details").textContent === "Copied");
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), details);
    assert.equal(
      await page.$eval('#load-steps li[data-step="download"]', (li) => li.dataset.stepState),
      "failed",
    );
    await shot("02-load-error");

    // The server is mended; the user clears the cache and retries.
    await serverCorrupts("static", false);
    await page.click("#clear-cache-retry");
    await page.waitForFunction(() => document.body.dataset.vmState !== "error");
    await waitReady(page);
    assert.equal(await screen(), "dashboard");
    assert.equal(await page.evaluate(() => document.body.dataset.environment), "static");
  });

  test("the dashboard shows the environment's version, status, memory, storage and uptime", async () => {
    await page.waitForFunction(() => /MiB in use/.test(document.getElementById("vm-status").textContent));
    assert.equal(await page.textContent("#env-title"), "Static Web Server");
    assert.equal(await page.textContent("#env-status"), "Running");
    assert.match(await page.textContent("#env-version"), /^[0-9a-f]{8}$/);
    await page.waitForFunction(() => /used/.test(document.getElementById("storage").textContent));
    await page.waitForFunction(() => /\d+ s/.test(document.getElementById("env-uptime").textContent));
    assert.match(await page.textContent("#apps"), /No apps deployed yet/);
    await shot("03-dashboard-empty");
  });

  test("the deploy dialog checks the name as it is typed and detects the app", async () => {
    await openDeployDialog(page);
    await page.fill("#app-name", "Bad Name");
    assert.equal(await page.$eval("#name-hint", (el) => el.dataset.valid), "false");
    assert.match(await page.textContent("#name-hint"), /lowercase|letters/i);
    await page.fill("#app-name", "admin");
    assert.equal(await page.$eval("#name-hint", (el) => el.dataset.valid), "false");
    await page.fill("#app-name", "site");
    assert.equal(await page.textContent("#name-hint"), `Will be served at ${BASE}/app/site/`);

    // A Flask app does not fit the static environment: the dialog says
    // which one runs it and offers to switch.
    await page.setInputFiles("#folder-input", fixture("python/flask-notes"));
    await page.waitForFunction(() => document.getElementById("detected").dataset.fit === "no");
    assert.match(await page.textContent("#detected-summary"), /Flask app/);
    assert.match(await page.textContent("#compat"), /cannot run a Flask app: it needs Python/);
    assert.equal(await page.textContent("#compat-switch"), "Switch to Python");
    assert.ok(await page.isVisible("#compat-switch"));
    await shot("04-deploy-incompatible");

    // The static site fits; variables are added and removed as rows.
    await page.setInputFiles("#folder-input", site.dir);
    await page.waitForFunction(() => document.getElementById("detected").dataset.fit === "yes");
    assert.match(await page.textContent("#picked"), new RegExp(`${site.files.length} files`));
    assert.ok(!(await page.isVisible("#compat-switch")));
    await page.click("#env-add");
    await page.fill("#env-rows .row:last-child input[name=key]", "1BAD");
    await page.click("#deploy-button");
    await page.waitForFunction(() => document.getElementById("deploy-status").dataset.state === "error");
    assert.match(await page.textContent("#deploy-status"), /not a valid variable name/);
    await page.click("#env-rows .row:last-child [data-remove-env]");
    await shot("05-deploy-dialog");
    await page.click("#deploy-cancel");
  });

  test("a site deployed through the dialog runs, opens, and shows its requests", async () => {
    const deployed = await deployFolder(page, "site", site.dir, "", { keepOpen: true });
    assert.equal(deployed.state, "done", deployed.text);
    assert.ok(await page.isVisible("#deploy-open-app"));
    const inPage = await fetchInPage(page, "/app/site/");
    assert.equal(inPage.status, 200, inPage.text);
    const [tab] = await Promise.all([context.waitForEvent("page"), page.click("#deploy-open-app")]);
    await tab.waitForLoadState();
    assert.match(await tab.textContent("body"), /Hello from nginx in the VM/);
    await tab.close();
    await page.click("#deploy-cancel");

    for (const path of ["/app/site/", "/app/site/css/main.css", "/app/site/nothing-here"]) {
      await fetchInPage(page, path);
    }
    await page.click("#refresh-apps");
    await page.waitForFunction(() => Number(document.querySelector('#apps li[data-app="site"] [data-requests]')
      ?.dataset.requests) >= 4);
    assert.equal(await page.$eval('#apps li[data-app="site"]', (li) => li.dataset.state), "static");
    await shot("06-dashboard-with-app");

    await openDetails(page, "site", "details");
    await page.waitForFunction(() => document.querySelectorAll("#requests tbody tr").length >= 4);
    const rows = await page.$$eval("#requests tbody tr", (trs) => trs.map((tr) => tr.textContent));
    assert.ok(rows.some((r) => /GET\/nothing-here404/.test(r)), rows.join("\n"));
    assert.ok(rows.some((r) => /GET\/css\/main\.css200/.test(r)), rows.join("\n"));
    assert.equal(await page.textContent("#app-url"), `${BASE}/app/site/`);
    await shot("07-app-details-static");
    await closeDetails(page);
  });

  test("a ZIP file or a ZIP URL deploys through the dialog; a ZIP escaping its folder is refused", async () => {
    const files = filesOf(fixture("static-site"));
    const dir = mkdtempSync(join(tmpdir(), "appserver-zip-"));
    const good = join(dir, "site.zip");
    // Zipped as a folder, as people do: the wrapper is dropped.
    writeFileSync(good, zipOf(files.map((f) => ({ path: "my-site/" + f.path, data: f.data }))));
    const evil = join(dir, "evil.zip");
    writeFileSync(evil, zipOf([{ path: "../../etc/cron.d/evil", data: "x" }]));

    await openDeployDialog(page);
    await page.click('#deploy-dialog [role=tab][data-source="zip"]');
    await page.setInputFiles("#zip-input", evil);
    await page.waitForFunction(() => /escape/.test(document.getElementById("picked").textContent));
    assert.equal(await page.$eval("#picked", (el) => el.dataset.state), "error");
    await shot("05b-deploy-zip-refused");
    // The refused ZIP leaves nothing picked: the folder picked before is not deployed instead.
    await page.fill("#app-name", "zipped");
    await page.$eval("#deploy-status", (el) => { el.dataset.state = "pending"; });
    await page.click("#deploy-button");
    await page.waitForFunction(() => document.getElementById("deploy-status").dataset.state === "error");
    assert.match(await page.textContent("#deploy-status"), /Pick a folder or a ZIP/);

    await page.setInputFiles("#zip-input", good);
    await page.waitForFunction(() => document.getElementById("detected").dataset.fit === "yes");
    assert.match(await page.textContent("#picked"), new RegExp(`^${files.length} files`));
    await page.$eval("#deploy-status", (el) => { el.dataset.state = "pending"; });
    await page.click("#deploy-button");
    await page.waitForFunction(() => ["done", "error"].includes(document.getElementById("deploy-status").dataset.state),
      null, { timeout: 120_000 });
    assert.match(await page.textContent("#deploy-status"), /Deployed zipped/);
    for (const f of files) {
      const r = await fetchInPage(page, "/app/zipped/" + f.path.split("/").map(encodeURIComponent).join("/"));
      assert.equal(r.sha256, sha256(f.data), f.path);
    }

    // A ZIP fetched from a URL is unpacked the same way.
    const url = "data:application/zip;base64," + zipOf(files).toString("base64");
    await page.click('#deploy-dialog [role=tab][data-source="url"]');
    await page.fill("#zip-url", url);
    await page.$eval("#picked", (el) => { el.textContent = ""; });
    await page.click("#zip-url-fetch");
    await page.waitForFunction(() => /files/.test(document.getElementById("picked").textContent));
    assert.match(await page.textContent("#picked"), new RegExp(`^${files.length} files`));
    await page.click("#deploy-cancel");
  });

  test("switching environment warns about the running apps, then loads the other one", async () => {
    await page.click("#switch-env");
    assert.equal(await screen(), "environments");
    assert.equal(await page.$eval("#env-static", (c) => c.dataset.current), "true");
    await page.click("#load-python");
    await page.waitForFunction(() => document.getElementById("switch-dialog").open);
    assert.match(await page.textContent("#switch-title"), /Switch from Static Web Server to Python/);
    assert.match(await page.textContent("#switch-apps"), /site at \/app\/site\//);
    await shot("08-switch-warning");
    await page.click("#switch-confirm");
    await page.waitForURL(/application-server/);
    await page.waitForFunction(() => document.body.dataset.environment === "python", null, { timeout: 60_000 });
    await waitReady(page);
    assert.equal(await screen(), "dashboard");
    assert.equal(await page.textContent("#env-title"), "Python");
    // The static site stops answering while python runs.
    const gone = await fetchInPage(page, "/app/site/");
    assert.equal(gone.status, 404);
  });

  test("a Flask app: running, logs followed and searched, stopped and started from its details", async () => {
    const deployed = await deployFolder(page, "notes", fixture("python/flask-notes"), "GREETING=hi from the UI test");
    assert.equal(deployed.state, "done", deployed.text);
    assert.equal(deployed.kind, "flask");
    const home = await fetchInPage(page, "/app/notes/");
    assert.equal(home.status, 200);
    await page.click("#refresh-apps");
    await page.waitForFunction(() => document.querySelector('#apps li[data-app="notes"]')?.dataset.state === "running");

    await openDetails(page, "notes", "logs");
    assert.equal(await page.$eval("#app-dialog", (d) => d.dataset.state), "running");
    assert.match(await page.textContent("#app-env-shown"), /GREETING=hi from the UI test/);
    await page.waitForFunction(() => document.getElementById("logs").textContent.length > 0
      && document.getElementById("logs").textContent !== "(no output yet)", null, { timeout: 30_000 });
    const all = Number((await page.textContent("#logs-count")).split(" ")[0]);
    await page.fill("#logs-search", "zz-no-line-has-this");
    assert.match(await page.textContent("#logs"), /No line holds/);
    await page.fill("#logs-search", "");
    assert.equal(Number((await page.textContent("#logs-count")).split(" ")[0]), all);
    await shot("09-app-details-flask");

    await page.click('#app-dialog [data-detail-action="stop"]');
    await page.waitForFunction(() => document.getElementById("app-dialog").dataset.state === "stopped", null,
      { timeout: 60_000 });
    assert.equal((await fetchInPage(page, "/app/notes/")).status, 503);
    await page.click('#app-dialog [data-detail-action="start"]');
    await page.waitForFunction(() => document.getElementById("app-dialog").dataset.state === "running", null,
      { timeout: 120_000 });
    assert.equal((await fetchInPage(page, "/app/notes/")).status, 200);
    await closeDetails(page);
    await page.setViewportSize({ width: 420, height: 800 });
    await shot("10-dashboard-narrow");
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  test("switching back finds the first environment's apps where they were", async () => {
    await page.click("#nav-environments");
    await page.click("#load-static");
    await page.waitForFunction(() => document.getElementById("switch-dialog").open);
    assert.match(await page.textContent("#switch-apps"), /notes/);
    await page.click("#switch-confirm");
    await page.waitForFunction(() => document.body.dataset.environment === "static", null, { timeout: 60_000 });
    await waitReady(page);
    await page.waitForFunction(() => document.querySelector('#apps li[data-app="site"]'));
    const index = await fetchInPage(page, "/app/site/");
    assert.equal(index.status, 200);
    assert.match(index.text, /Hello from nginx in the VM/);
  });
});
