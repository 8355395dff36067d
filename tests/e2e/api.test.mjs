// The deploy API under /application-server/api/, driven the way the main
// Supabase Lite UI would: from the site's main page, through
// /application-server/client.js, which opens the management page in a
// hidden frame to run the VM. Every endpoint, and its errors.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  BASE, BOOT_TIMEOUT_MS, fetchInPage, filesOf, fixture, launch, sha256, zipOf,
} from "./harness.mjs";

/**
 * One API call from the page: `body` is bytes (sent as they are with
 * `type`), or `{ form: [{ name, path?, data }] }` for a FormData.
 */
async function api(page, method, path, { body, type, query = "" } = {}) {
  const init = { method, body: undefined, type, form: undefined };
  if (body?.form) {
    init.form = body.form.map((f) => ({ ...f, data: Buffer.from(f.data).toString("base64") }));
  } else if (body !== undefined) {
    init.body = Buffer.from(body).toString("base64");
  }
  return page.evaluate(async ({ url, init }) => {
    const decode = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    let body;
    const headers = {};
    if (init.form) {
      body = new FormData();
      for (const f of init.form) {
        if (f.path) body.append(f.name, new Blob([decode(f.data)]), f.path);
        else body.append(f.name, new TextDecoder().decode(decode(f.data)));
      }
    } else if (init.body !== undefined) {
      body = decode(init.body);
      if (init.type) headers["content-type"] = init.type;
    }
    const response = await fetch(url, { method: init.method, body, headers });
    const text = await response.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON: the assertion shows the text */ }
    return {
      status: response.status,
      json,
      text: text.slice(0, 2000),
      allow: response.headers.get("allow"),
      contentType: response.headers.get("content-type"),
    };
  }, { url: `/application-server/api${path}${query}`, init });
}

/** Asserts an API error: status, JSON `{error: {code, message}}`. */
function assertError(r, status, code) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json?.error?.code, code, r.text);
  assert.ok(r.json.error.message.length > 10, r.text);
  assert.match(r.contentType, /application\/json/);
}

/** Waits until app `name` reports `state` (the supervisor works on its own). */
async function waitAppState(page, name, states, timeout = 300_000) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await api(page, "GET", `/apps/${name}`);
    if (states.includes(last.json?.app?.state)) return last.json.app;
    await new Promise((r) => setTimeout(r, 1000));
  }
  assert.fail(`${name} never reached ${states}: ${last?.text}`);
}

describe("deploy API", () => {
  let browser, context, page;
  const site = filesOf(fixture("static-site"));

  before(async () => {
    browser = await launch();
    context = await browser.newContext();
    page = await context.newPage();
    page.on("pageerror", (e) => console.error("[page error]", e.message));
    await page.goto(`${BASE}/`);
  });

  after(async () => {
    await browser?.close();
  });

  test("client.js from the main page opens a hidden host, and the API answers through the worker", async () => {
    const status = await page.evaluate(async () => {
      const { AppServer } = await import("/application-server/client.js");
      window.server = new AppServer();
      return window.server.ensureHost();
    });
    assert.equal(status.state, "unloaded");
    assert.equal(status.environment, null);
    const host = page.frames().find((f) => f.url().endsWith("/application-server/"));
    assert.ok(host, "a frame runs the management page");
    assert.equal(await page.$eval("iframe", (f) => f.hidden), true);
  });

  test("environments are listed; app calls before a load say to load first", async () => {
    const envs = await api(page, "GET", "/environments");
    assert.equal(envs.status, 200, envs.text);
    const ids = envs.json.environments.map((e) => e.id);
    for (const id of ["static", "nodejs", "python"]) assert.ok(ids.includes(id), ids.join());
    assert.equal(envs.json.current, null);
    assert.ok(envs.json.environments.every((e) => e.name && e.about && e.runs.length && !e.loaded));
    const apps = await api(page, "GET", "/apps");
    assertError(apps, 503, "not_running");
    assert.match(apps.json.error.message, /environments\/<id>\/load/);
  });

  test("bad calls get JSON errors with stable codes", async () => {
    assertError(await api(page, "GET", "/nope"), 404, "unknown_endpoint");
    assertError(await api(page, "GET", ""), 404, "unknown_endpoint");
    const patch = await api(page, "PATCH", "/apps/site");
    assertError(patch, 405, "method_not_allowed");
    assert.equal(patch.allow, "GET, PUT, POST, DELETE");
    assertError(await api(page, "POST", "/apps"), 405, "method_not_allowed");
    assertError(await api(page, "PUT", "/apps/Bad_Name", { body: "x", type: "application/zip" }), 400, "bad_name");
    assertError(await api(page, "PUT", "/apps/admin", { body: "x", type: "application/zip" }), 400, "reserved_name");
    assertError(await api(page, "POST", "/environments/windows/load"), 404, "unknown_environment");
  });

  test("loading the static environment is followed to ready through GET /status", async () => {
    const seen = await page.evaluate(async (timeoutMs) => {
      const states = [];
      const status = await window.server.load("static", {
        timeoutMs,
        onProgress: (s) => states.push(s.state + (s.progress ? `:${s.progress.loaded}` : "")),
      });
      states.push(`${status.state}/${status.environment}/${status.version}`);
      return states;
    }, BOOT_TIMEOUT_MS);
    const last = seen.at(-1);
    assert.match(last, /^ready\/static\/[0-9a-f]{16}$/, seen.join(" "));
    const status = await api(page, "GET", "/status");
    assert.equal(status.json.state, "ready");
    assert.ok(status.json.memory_kb.MemTotal > 0, status.text);
    assert.ok(status.json.uptime_s >= 0);
    // Loading what runs already answers at once.
    const again = await api(page, "POST", "/environments/static/load");
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.state, "ready");
  });

  test("a ZIP, a multipart form and a tar deploy, and each app serves its files", async () => {
    // A ZIP of the folder itself (not its contents): the wrapper is dropped.
    const zipped = await api(page, "PUT", "/apps/zipped", {
      body: zipOf(site.map((f) => ({ path: "static-site/" + f.path, data: f.data }))),
      type: "application/zip",
    });
    assert.equal(zipped.status, 201, zipped.text);
    assert.equal(zipped.json.app.kind, "static");
    assert.equal(zipped.json.app.files, site.length);
    assert.equal(zipped.json.app.url, "/app/zipped/");
    assert.ok(zipped.json.stored_bytes > 0, zipped.text);

    const formed = await api(page, "POST", "/apps/formed", {
      body: { form: site.map((f) => ({ name: "files", path: f.path, data: f.data })) },
    });
    assert.equal(formed.status, 201, formed.text);
    assert.equal(formed.json.app.files, site.length);

    const tar = execFileSync("tar", ["-cf", "-", "-C", fixture("static-site"), "."]);
    const tarred = await api(page, "PUT", "/apps/tarred", { body: tar, type: "application/x-tar" });
    assert.equal(tarred.status, 201, tarred.text);

    for (const app of ["zipped", "formed", "tarred"]) {
      for (const file of site) {
        const url = `/app/${app}/` + file.path.split("/").map(encodeURIComponent).join("/");
        const r = await fetchInPage(page, url);
        assert.equal(r.status, 200, `${url}: ${r.text}`);
        assert.equal(r.sha256, sha256(file.data), `${url} bytes differ`);
      }
    }
    const list = await api(page, "GET", "/apps");
    assert.deepEqual(list.json.apps.map((a) => a.name).sort(), ["formed", "tarred", "zipped"]);
    const one = await api(page, "GET", "/apps/zipped");
    assert.equal(one.json.app.state, "static");
    assert.ok(one.json.app.requests >= site.length, one.text);
    // The management page in the frame follows what the API did.
    const host = page.frames().find((f) => f.url().endsWith("/application-server/"));
    await host.waitForFunction(() => document.querySelectorAll("#apps li[data-app]").length === 3);
  });

  test("bad deploys are refused with a reason, and the deployed app is untouched", async () => {
    const cases = [
      [zipOf([{ path: "../escape.txt", data: "x" }]), "application/zip", 400, "path_escapes"],
      [zipOf([{ path: "/etc/passwd", data: "x" }]), "application/zip", 400, "path_escapes"],
      [zipOf([]), "application/zip", 400, "empty"],
      [Buffer.from("PK\x05\x06 but not really a zip"), "application/zip", 400, "bad_archive"],
      [Buffer.from("hello"), "text/plain", 415, "unsupported_media_type"],
    ];
    for (const [body, type, status, code] of cases) {
      assertError(await api(page, "PUT", "/apps/zipped", { body, type }), status, code);
    }
    assertError(
      await api(page, "PUT", "/apps/zipped", { body: zipOf(site), type: "application/zip", query: "?port=80" }),
      400, "bad_port",
    );
    // Over 64 MiB: the worker refuses it before the page sees a byte.
    const big = await page.evaluate(async () => {
      const r = await fetch("/application-server/api/apps/zipped", {
        method: "PUT", headers: { "content-type": "application/zip" }, body: new Uint8Array(65 * 1024 * 1024),
      });
      return { status: r.status, json: await r.json() };
    });
    assert.equal(big.status, 413);
    assert.equal(big.json.error.code, "too_large");
    const still = await fetchInPage(page, "/app/zipped/index.html");
    assert.equal(still.status, 200);
    assert.equal(still.sha256, sha256(readFileSync(join(fixture("static-site"), "index.html"))));
  });

  test("DELETE removes an app: its URL and its API entry answer 404", async () => {
    const del = await api(page, "DELETE", "/apps/formed");
    assert.equal(del.status, 200, del.text);
    assert.equal(del.json.deleted, "formed");
    assertError(await api(page, "GET", "/apps/formed"), 404, "unknown_app");
    assertError(await api(page, "DELETE", "/apps/formed"), 404, "unknown_app");
    assertError(await api(page, "POST", "/apps/formed/start"), 404, "unknown_app");
    assertError(await api(page, "GET", "/apps/formed/logs"), 404, "unknown_app");
    assert.equal((await fetchInPage(page, "/app/formed/")).status, 404);
    // A static site has no process to stop.
    const stop = await api(page, "POST", "/apps/zipped/stop");
    assert.equal(stop.status, 409, stop.text);
  });

  test("a switch to python, then a Flask app run, stopped, started, restarted, and a crash read from its logs", async () => {
    const switching = await api(page, "POST", "/environments/python/load");
    assert.equal(switching.status, 202, switching.text);
    assert.equal(switching.json.state, "switching");
    const status = await page.evaluate((timeoutMs) => window.server.load("python", { timeoutMs }), BOOT_TIMEOUT_MS);
    assert.equal(status.environment, "python");
    // The static apps stay with the static environment.
    assert.deepEqual(status.apps, []);

    const notes = await api(page, "PUT", "/apps/notes", {
      body: zipOf(filesOf(fixture("python/flask-notes"))),
      type: "application/zip",
      query: "?env=GREETING%3Dhello+from+the+API",
    });
    assert.equal(notes.status, 201, notes.text);
    assert.equal(notes.json.app.kind, "flask");
    assert.equal(notes.json.app.env.GREETING, "hello from the API");
    await waitAppState(page, "notes", ["running"]);
    const home = await fetchInPage(page, "/app/notes/");
    assert.equal(home.status, 200, home.text);
    assert.match(home.text, /hello from the API/);

    const stopped = await api(page, "POST", "/apps/notes/stop");
    assert.equal(stopped.status, 200, stopped.text);
    assert.equal(stopped.json.app.state, "stopped");
    const down = await fetchInPage(page, "/app/notes/");
    assert.equal(down.status, 503);
    assert.equal(down.error, "app_down");
    const started = await api(page, "POST", "/apps/notes/start");
    assert.equal(started.status, 200, started.text);
    await waitAppState(page, "notes", ["running"]);
    assert.equal((await fetchInPage(page, "/app/notes/")).status, 200);
    const restarted = await api(page, "POST", "/apps/notes/restart");
    assert.equal(restarted.status, 200, restarted.text);
    await waitAppState(page, "notes", ["running"]);
    assert.equal((await fetchInPage(page, "/app/notes/")).status, 200);

    const crashy = await api(page, "PUT", "/apps/crashy", {
      body: zipOf(filesOf(fixture("python/crash-loop"))),
      type: "application/zip",
    });
    assert.equal(crashy.status, 201, crashy.text);
    const failed = await waitAppState(page, "crashy", ["error"]);
    assert.match(failed.error, /failing on purpose/);
    const logs = await api(page, "GET", "/apps/crashy/logs");
    assert.equal(logs.status, 200, logs.text);
    assert.match(logs.json.log, /failing on purpose/);
    // The crash harmed nobody else.
    assert.equal((await fetchInPage(page, "/app/notes/")).status, 200);
  });
});
