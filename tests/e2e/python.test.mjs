// The python environment end to end: real Chromium loads the python image's
// warm VM state, apps are deployed through the page and started by the warm
// pool inside v86, and every request goes through the service worker and
// nginx to Flask, FastAPI and Django.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  deployFolder, fetchInPage, fixture, launch, listedApps, loadEnvironment, openServer, waitReady,
} from "./harness.mjs";

const form = (fields) => ({
  method: "POST",
  headers: { "content-type": "application/x-www-form-urlencoded" },
  body: new URLSearchParams(fields).toString(),
});
const json = (method, value) => ({
  method,
  headers: { "content-type": "application/json" },
  body: JSON.stringify(value),
});

/** Waits until the page lists app `name` in one of `states`. */
async function waitForState(page, name, states, timeout = 120_000) {
  await page.waitForFunction(
    ({ name, states }) => states.includes(document.querySelector(`#apps li[data-app="${name}"]`)?.dataset.state),
    { name, states },
    { timeout },
  );
  return (await listedApps(page))[name];
}

describe("python environment", () => {
  let browser, context, page;
  const timings = {};

  before(async () => {
    browser = await launch();
    context = await browser.newContext();
    page = await openServer(context);
  });

  after(async () => {
    console.log(`python e2e timings: ${JSON.stringify(timings)}`);
    await browser?.close();
  });

  test("the python environment loads from its warm state", async () => {
    await loadEnvironment(page, "python");
    assert.equal(await page.evaluate(() => document.body.dataset.environment), "python");
  });

  test("a Flask app: detected, started from the warm pool, templates, forms and redirects under its prefix", async () => {
    const deployed = await deployFolder(page, "notes", fixture("python/flask-notes"), "GREETING=hello from the deploy form");
    timings.flask_deploy_ms = deployed.ms;
    assert.equal(deployed.state, "done", deployed.text);
    assert.equal(deployed.kind, "flask");
    assert.equal(deployed.appState, "running");
    assert.match(deployed.text, /Flask app \(app\.py creates Flask\): runs app:app like `gunicorn app:app` on port \d+, running/);

    const home = await fetchInPage(page, "/app/notes/");
    assert.equal(home.status, 200, home.text);
    assert.match(home.contentType, /text\/html/);
    assert.match(home.text, /<p id="greeting">hello from the deploy form<\/p>/);
    // url_for builds URLs under the app's prefix.
    assert.match(home.text, /action="\/app\/notes\/notes"/);
    assert.match(home.text, /href="\/app\/notes\/static\/style.css"/);
    const css = await fetchInPage(page, "/app/notes/static/style.css");
    assert.equal(css.status, 200);
    assert.match(css.contentType, /text\/css/);

    const posted = await fetchInPage(page, "/app/notes/notes", form({ text: "buy milk" }));
    assert.equal(posted.status, 200, posted.text);
    assert.ok(posted.redirected, "the form POST redirects");
    assert.equal(new URL(posted.url).pathname, "/app/notes/");
    assert.match(posted.text, /<li>buy milk<\/li>/);
    const refused = await fetchInPage(page, "/app/notes/notes", form({ text: " " }));
    assert.equal(refused.status, 400);

    // The same app under a project prefix: the redirect stays under it.
    const viaProject = await fetchInPage(page, "/demo/app/notes/notes", form({ text: "second" }));
    assert.equal(new URL(viaProject.url).pathname, "/demo/app/notes/");
    assert.match(viaProject.text, /<li>buy milk<\/li><li>second<\/li>/);
    const who = JSON.parse((await fetchInPage(page, "/app/notes/whoami")).text);
    assert.equal(who.script_root, "/app/notes");
    assert.equal(who.path, "/whoami");
  });

  test("a FastAPI app: JSON in and out, validation errors, URLs under root_path", async () => {
    const deployed = await deployFolder(page, "items", fixture("python/fastapi-items"));
    timings.fastapi_deploy_ms = deployed.ms;
    assert.equal(deployed.state, "done", deployed.text);
    assert.equal(deployed.kind, "fastapi");
    assert.match(deployed.text, /FastAPI app .*main:app.*uvicorn main:app/);

    const created = await fetchInPage(page, "/app/items/items", json("POST", { name: "lamp", price: 12.5 }));
    assert.equal(created.status, 201, created.text);
    const item = JSON.parse(created.text);
    assert.deepEqual([item.id, item.name, item.price], [1, "lamp", 12.5]);
    assert.equal(new URL(item.url).pathname, "/app/items/items/1");
    const listed = JSON.parse((await fetchInPage(page, "/app/items/items")).text);
    assert.equal(listed.items.length, 1);

    const invalid = await fetchInPage(page, "/app/items/items", json("POST", { name: "lamp", price: "cheap" }));
    assert.equal(invalid.status, 422);
    const detail = JSON.parse(invalid.text).detail;
    assert.deepEqual(detail[0].loc, ["body", "price"]);
    const docs = await fetchInPage(page, "/app/items/openapi.json");
    assert.equal(docs.status, 200);
    assert.equal(JSON.parse(docs.text).info.title, "items");
  });

  test("a Django project: a view, the admin login page and its static files", async () => {
    const deployed = await deployFolder(page, "dj", fixture("python/django-site"));
    timings.django_deploy_ms = deployed.ms;
    assert.equal(deployed.state, "done", deployed.text);
    assert.equal(deployed.kind, "django");
    assert.match(deployed.text, /DJANGO_SETTINGS_MODULE=mysite\.settings/);

    const hello = JSON.parse((await fetchInPage(page, "/app/dj/")).text);
    assert.deepEqual(hello, { hello: "django", self: "/app/dj/", admin: "/app/dj/admin/" });
    const admin = await fetchInPage(page, "/app/dj/admin/");
    assert.ok(admin.redirected, "the admin index redirects to its login page");
    assert.equal(new URL(admin.url).pathname, "/app/dj/admin/login/");
    assert.equal(admin.status, 200);
    assert.match(admin.text, /Django administration/);
    assert.match(admin.text, /name="csrfmiddlewaretoken"/);
    assert.match(admin.text, /href="\/app\/dj\/static\/admin\/css\/base.css"/);
    const css = await fetchInPage(page, "/app/dj/static/admin/css/base.css");
    assert.equal(css.status, 200);
    assert.match(css.contentType, /text\/css/);
  });

  test("a crash-looping app ends in error with its output, and the other apps keep answering", async () => {
    const deployed = await deployFolder(page, "crashy", fixture("python/crash-loop"));
    assert.equal(deployed.state, "failed-start", deployed.text);
    assert.match(deployed.text, /exited with code 3/);
    const listed = await waitForState(page, "crashy", ["error"], 180_000);
    assert.match(listed.text, /exited with code 3/);
    assert.match(listed.text, /failing on purpose/);
    const down = await fetchInPage(page, "/app/crashy/");
    assert.equal(down.status, 503);
    assert.equal(down.error, "app_down");
    assert.match(down.text, /is not running/);

    await page.click('#apps li[data-app="crashy"] button[data-action="logs"]');
    await page.waitForFunction(() => /failing on purpose/.test(document.getElementById("logs").textContent));
    await page.click("#app-close");

    const all = await page.evaluate(async () => Promise.all(
      ["/app/notes/", "/app/items/items", "/app/dj/"].map(async (u) => (await fetch(u)).status),
    ));
    assert.deepEqual(all, [200, 200, 200]);
  });

  test("stop and start from the page; a stopped app answers a clear 503", async () => {
    await page.click('#apps li[data-app="items"] button[data-action="stop"]');
    await waitForState(page, "items", ["stopped"]);
    const stopped = await fetchInPage(page, "/app/items/items");
    assert.equal(stopped.status, 503);
    assert.equal(stopped.error, "app_down");
    await page.click('#apps li[data-app="items"] button[data-action="start"]');
    await waitForState(page, "items", ["running"]);
    const again = await fetchInPage(page, "/app/items/items");
    assert.equal(again.status, 200);
    // A fresh process: the items created before the stop are gone.
    assert.deepEqual(JSON.parse(again.text), { items: [] });
  });

  test("after a reload the apps come back running, with the state they had", async () => {
    await page.reload();
    await waitReady(page);
    const started = Date.now();
    const home = await fetchInPage(page, "/app/notes/");
    timings.first_request_after_reload_ms = Date.now() - started;
    assert.equal(home.status, 200);
    // The process was saved with the VM: its in-memory notes are still there.
    assert.match(home.text, /<li>buy milk<\/li><li>second<\/li>/);
    // The dashboard lists the apps once it has read them from the guest.
    await page.waitForFunction(() => document.querySelectorAll("#apps li[data-app]").length >= 3);
    const apps = await listedApps(page);
    assert.equal(apps.notes.state, "running");
    assert.equal(apps.dj.state, "running");
    assert.equal(apps.crashy.state, "error");
  });
});
