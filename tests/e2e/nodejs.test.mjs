// The nodejs environment end to end: real Chromium loads the nodejs image's
// warm VM state, an Express app is deployed through the page and handed to
// a warm node worker inside v86, and requests go through the service worker
// and nginx to it.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  deployFolder, fetchInPage, fixture, launch, loadEnvironment, openServer,
} from "./harness.mjs";

const json = (method, value) => ({
  method,
  headers: { "content-type": "application/json" },
  body: JSON.stringify(value),
});

describe("nodejs environment", () => {
  let browser, context, page;
  const timings = {};

  before(async () => {
    browser = await launch();
    context = await browser.newContext();
    page = await openServer(context);
  });

  after(async () => {
    console.log(`nodejs e2e timings: ${JSON.stringify(timings)}`);
    await browser?.close();
  });

  test("the nodejs environment loads from its warm state", async () => {
    await loadEnvironment(page, "nodejs");
    assert.equal(await page.evaluate(() => document.body.dataset.environment), "nodejs");
  });

  test("an Express API: detected, started in a warm worker, JSON, 404, static files and redirects", async () => {
    const deployed = await deployFolder(page, "todo", fixture("nodejs/express-api"), "APP_MODE=e2e");
    timings.express_deploy_to_running_ms = deployed.agentMs;
    assert.equal(deployed.state, "done", deployed.text);
    assert.equal(deployed.kind, "express");
    assert.equal(deployed.appState, "running");
    assert.match(deployed.text, /Express app \(package.json depends on express\): runs server.js like `node server.js` on port \d+/);

    const root = JSON.parse((await fetchInPage(page, "/app/todo/")).text);
    assert.equal(root.app, "express-api");
    assert.equal(root.mode, "e2e");
    assert.match(root.node, /^v\d+\./);
    const list = await fetchInPage(page, "/app/todo/todos");
    assert.equal(list.status, 200);
    assert.match(list.contentType, /application\/json/);
    assert.equal(JSON.parse(list.text).length, 1);

    const created = await fetchInPage(page, "/app/todo/todos", json("POST", { title: "ship it" }));
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(JSON.parse(created.text), { id: 2, title: "ship it", done: false });
    const invalid = await fetchInPage(page, "/app/todo/todos", json("POST", { title: 5 }));
    assert.equal(invalid.status, 400);
    const missing = await fetchInPage(page, "/app/todo/todos/99");
    assert.equal(missing.status, 404);
    assert.match(missing.text, /no todo 99/);
    const unknown = await fetchInPage(page, "/app/todo/nothing/here");
    assert.equal(unknown.status, 404);
    assert.equal(JSON.parse(unknown.text).path, "/nothing/here");

    const file = await fetchInPage(page, "/app/todo/public/hello.txt");
    assert.equal(file.status, 200);
    assert.match(file.contentType, /text\/plain/);
    assert.equal(file.text, "plain text served by express.static\n");

    // res.redirect("/todos/1") lands under the app's prefix, also under a project.
    const redirected = await fetchInPage(page, "/app/todo/first");
    assert.ok(redirected.redirected);
    assert.equal(new URL(redirected.url).pathname, "/app/todo/todos/1");
    const viaProject = await fetchInPage(page, "/demo/app/todo/first");
    assert.equal(new URL(viaProject.url).pathname, "/demo/app/todo/todos/1");
    assert.equal(JSON.parse(viaProject.text).title, "write tests");
  });

  test("a second app starts; a crash-looping app ends in error; the others keep answering", async () => {
    const second = await deployFolder(page, "todo2", fixture("nodejs/express-api"));
    assert.equal(second.state, "done", second.text);
    timings.second_express_deploy_to_running_ms = second.agentMs;

    // FIXME(#4): no redeploy here: after todo and todo2 it would be the
    // third start since the restore, and the pool's refill still loads cold
    // then (55-110 s), past the bridge's wait for the agent. Redeploys are
    // timed by the bench.

    const crashed = await deployFolder(page, "crashy", fixture("nodejs/crash-loop"));
    assert.equal(crashed.state, "failed-start", crashed.text);
    assert.match(crashed.text, /exited with code 4/);
    assert.match(crashed.text, /failing on purpose/);
    // FIXME(#4): the node pool restarts a crash-looping app in a cold worker
    // (a minute each in v86), so reaching `error` takes minutes; the python
    // test checks the supervisor's give-up.

    const statuses = await page.evaluate(async () => Promise.all(
      ["/app/todo/todos", "/app/todo2/todos"].map(async (u) => (await fetch(u)).status),
    ));
    assert.deepEqual(statuses, [200, 200]);
    // The first app kept its state: the todo created before is still there.
    const list = JSON.parse((await fetchInPage(page, "/app/todo/todos")).text);
    assert.equal(list.length, 2);
  });
});
