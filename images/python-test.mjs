#!/usr/bin/env node
// Checks the python image's warm pool after a state restore: starts a fresh
// v86 in Node from the image's warm state (as restore-test.mjs does), then
//   1. waits for nginx, and pings the pool over the serial console
//   2. deploys a Flask app (template + form POST + redirect) through the agent
//      (PUT /v1/apps/<name>, a ustar body); the agent detects the kind, writes
//      the nginx proxy snippet and starts it through the pool before it
//      answers; polls GET /app/<name>/ through nginx on :80 until 200
//   3. checks the URLs the app generates (SCRIPT_NAME /app/<name>), a form
//      POST and its redirect, measures request latency, then stops it (and
//      checks the pool's status of the ended run: code or signal, `ended`)
//      and starts it again, timing start to first 200
//   4. the same for a FastAPI app (root_path, JSON, validation error) and a
//      Django project (a view, the admin login page and its static files)
//   5. redeploys the Flask app with a new version and checks that its log
//      shows only the new run
//   6. prints the pool's status with memory figures
//
// With an agent that does not start apps (it only unpacks them), the test
// routes each app with the pool's temporary "proxy" op and starts it through
// the pool itself. The pool is asked over the serial console: lines
// "pool: {json}" in, lines "pool-reply: {json}" out (python-pool.py --serial,
// temporary).
//
// Usage: node images/python-test.mjs OUTDIR [--timeout-s N] [--only flask]
// Prints restore_to_first_answer_ms, <app>_start_to_first_200_ms, ... and
// exits 0 when every check passed.

import { join } from "node:path";
import {
  guestGet,
  guestRequest,
  loadV86,
  makeTar,
  onSerialLine,
  pageOptions,
  readManifest,
  sleep,
} from "./v86-node.mjs";

const args = process.argv.slice(2);
const opts = {};
let outdir;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--timeout-s" || args[i] === "--only") opts[args[i]] = args[++i];
  else if (!args[i].startsWith("--") && outdir === undefined) outdir = args[i];
  else outdir = null;
}
if (!outdir) {
  console.error("usage: node images/python-test.mjs OUTDIR [--timeout-s N] [--only flask]");
  process.exit(2);
}
const manifest = readManifest(outdir);
if (!manifest.state) {
  console.error(`${outdir}/manifest.json has no "state": run images/warm-state.mjs first`);
  process.exit(2);
}
const TIMEOUT_MS = Number(opts["--timeout-s"] ?? 600) * 1000;
const ONLY = opts["--only"];

let t0 = performance.now();
const ms = () => Math.round(performance.now() - t0);
const log = (msg) => process.stderr.write(`[python-test ${String(ms()).padStart(6)} ms] ${msg}\n`);
let failed = false;
const check = (ok, what) => {
  log(`${ok ? "PASS" : "FAIL"} ${what}`);
  if (!ok) failed = true;
};
const result = (key, value) => console.log(`${key}: ${value}`);

// ------------------------------------------------------------ the fixtures --
const FLASK_APP = {
  "app.py": `from flask import Flask, redirect, render_template, request, url_for

app = Flask(__name__)
items = []


@app.route("/")
def index():
    return render_template("index.html", items=items, version=1)


@app.route("/add", methods=["POST"])
def add():
    items.append(request.form["item"])
    return redirect(url_for("index"))
`,
  "templates/index.html": `<!doctype html>
<title>items v{{ version }}</title>
<form method="post" action="{{ url_for('add') }}"><input name="item"></form>
<ul>{% for i in items %}<li>{{ i }}</li>{% endfor %}</ul>
`,
};
const FASTAPI_APP = {
  "main.py": `from fastapi import FastAPI, Request
from pydantic import BaseModel

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float


@app.get("/items/{item_id}")
def read_item(item_id: int, request: Request):
    return {"id": item_id, "self": request.url_for("read_item", item_id=item_id)}


@app.post("/items")
def create_item(item: Item):
    return {"name": item.name, "price": item.price}
`,
};
const DJANGO_APP = {
  "manage.py": `#!/usr/bin/env python3
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site1.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
`,
  "site1/__init__.py": "",
  "site1/settings.py": `SECRET_KEY = "python-test-only"
DEBUG = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "site1.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [], "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/tmp/site1.sqlite3"}}
STATIC_URL = "/static/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
`,
  "site1/urls.py": `from django.contrib import admin
from django.http import HttpResponse
from django.urls import path, reverse


def hello(request):
    return HttpResponse(f"hello from django at {reverse('hello')}")


urlpatterns = [path("", hello, name="hello"), path("admin/", admin.site.urls)]
`,
};

// ---------------------------------------------------------------- helpers --
const V86 = await loadV86();
t0 = performance.now();
const emulator = new V86(
  pageOptions(outdir, manifest, { initialState: join(outdir, manifest.state.path) }),
);
const watchdog = setTimeout(() => {
  log(`TIMEOUT after ${TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, TIMEOUT_MS);

// Pool requests over the serial console, one at a time.
let pending = null;
onSerialLine(emulator, (line) => {
  if (line.startsWith("pool-reply: ")) {
    const reply = JSON.parse(line.slice("pool-reply: ".length));
    const p = pending;
    pending = null;
    p?.(reply);
  } else {
    process.stderr.write(`[serial ${String(ms()).padStart(6)} ms] ${line}\n`);
  }
});
function pool(request, timeoutMs = 120000) {
  if (pending) throw new Error("a pool request is already pending");
  return new Promise((resolvePool, rejectPool) => {
    const timer = setTimeout(() => {
      pending = null;
      rejectPool(new Error(`pool ${request.op}: no reply in ${timeoutMs} ms`));
    }, timeoutMs);
    pending = (reply) => {
      clearTimeout(timer);
      resolvePool(reply);
    };
    emulator.serial0_send(`pool: ${JSON.stringify(request)}\n`);
  });
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];

/** GETs `path` through nginx until it answers 200 (or `untilMs` passes):
 * 502/503/504 while the app starts, 404 while nginx reloads. */
async function firstOk(path, untilMs) {
  let got;
  let polls = 0;
  for (;;) {
    polls++;
    got = await guestGet(emulator, 80, path, { timeoutMs: 30000 });
    if (got.status === 200 || performance.now() > untilMs) break;
    if (![404, 502, 503, 504].includes(got.status)) break;
    await sleep(100);
  }
  return { got, polls };
}

/** The pool's view of app `name` (null when it never started it). */
async function poolApp(name) {
  const st = await pool({ op: "status" });
  return st.apps?.[name] ?? null;
}

/** True when the agent starts apps itself (it detects the kind on deploy,
 * writes the proxy snippet and asks the pool); an agent without that only
 * unpacks, and the test routes and starts the app through the pool. */
let agentStarts = null;

/** Deploys one app through the agent and returns its first 200 answer; the
 * figure is from the PUT to that answer (unpack, snippet, start). */
async function launch(name, port, files, path, kind = "auto") {
  const putAt = performance.now();
  const put = await guestRequest(emulator, 8081, "PUT", `/v1/apps/${name}`, makeTar(files), {
    timeoutMs: 180000,
  });
  log(`PUT /v1/apps/${name} -> ${put.status} ${put.text} (${Math.round(put.ms)} ms)`);
  check(put.status === 200, `${name}: deployed through the agent`);
  const app = await poolApp(name);
  agentStarts ??= Boolean(app);
  if (!agentStarts) {
    const proxied = await pool({ op: "proxy", name, port });
    check(proxied.ok, `${name}: nginx proxies /app/${name}/ to :${port}`);
    return start(name, port, path, kind);
  }
  const deployed = JSON.parse(put.text || "{}");
  check(app.state === "running", `${name}: the agent started it (${deployed.kind}, port ${deployed.port}, ` +
    `pool state ${app.state}, ready in ${app.ready_s} s)`);
  const { got, polls } = await firstOk(path, performance.now() + 60000);
  check(got.status === 200, `${name}: GET ${path} -> ${got.status} after ${polls} poll(s)`);
  result(`${name}_deploy_to_first_200_ms`, Math.round(performance.now() - putAt));
  result(`${name}_deploy_put_ms`, Math.round(put.ms));
  return got;
}

/** Stops app `name` (through the agent when it supervises, so it is not
 * restarted) and checks what the pool says about the ended process. */
async function stopApp(name) {
  const stopAt = performance.now();
  if (agentStarts) {
    const stopped = await guestRequest(emulator, 8081, "POST", `/v1/apps/${name}/stop`, Buffer.alloc(0), {
      timeoutMs: 30000,
    });
    check(stopped.status === 200, `${name}: stopped through the agent -> ${stopped.status}`);
  } else {
    check((await pool({ op: "stop", name })).ok, `${name}: stop`);
  }
  let app;
  for (let i = 0; i < 100; i++) {
    app = await poolApp(name);
    if (app?.state === "exited") break;
    await sleep(50);
  }
  result(`${name}_stop_ms`, Math.round(performance.now() - stopAt));
  check(app?.state === "exited" && typeof app.ended === "number" && app.ended >= app.started &&
    (app.code !== null) !== (app.signal !== null),
    `${name}: pool status of the ended run (code ${app?.code}, signal ${app?.signal}, ` +
    `ended ${app?.ended && (app.ended - app.started).toFixed(1)} s after its start)`);
}

/** Starts an app that is deployed and routed; returns its first 200 answer
 * and prints the ms from "start" to it. */
async function start(name, port, path, kind = "auto") {
  const startAt = performance.now();
  let listeningMs = null;
  const started = (agentStarts
    ? guestRequest(emulator, 8081, "POST", `/v1/apps/${name}/start`, Buffer.alloc(0), {
      timeoutMs: 180000,
    })
      .then((r) => ({ ok: r.status === 200, state: "running", reply: r.text }))
    : pool({ op: "start", name, dir: `/srv/apps/${name}`, port, kind, wait: true }))
    .then((reply) => {
      listeningMs = Math.round(performance.now() - startAt);
      log(`start ${name} -> ${JSON.stringify(reply)} (${listeningMs} ms)`);
      return reply;
    });
  // Poll through nginx like a browser would (502/503 until the app listens).
  const { got, polls } = await firstOk(path, startAt + 120000);
  const firstMs = Math.round(performance.now() - startAt);
  const reply = await started;
  check(reply.ok && reply.state === "running", `${name}: started`);
  check(got.status === 200, `${name}: GET ${path} -> ${got.status} after ${polls} poll(s)`);
  result(`${name}_start_to_listening_ms`, listeningMs);
  result(`${name}_start_to_first_200_ms`, firstMs);
  const app = await poolApp(name);
  result(`${name}_guest_ready_s`, app?.ready_s);
  return got;
}

/** Stops and starts `name` again: checks the ended run's status and
 * measures a start of a deployed app on its own. */
async function stopStart(name, port, path, kind) {
  await stopApp(name);
  return start(name, port, path, kind);
}

async function latency(name, path, n = 20) {
  const times = [];
  for (let i = 0; i < n; i++) {
    const got = await guestGet(emulator, 80, path);
    if (got.status !== 200) check(false, `${name}: latency request ${i} -> ${got.status}`);
    times.push(got.ms);
  }
  times.sort((a, b) => a - b);
  result(`${name}_latency_ms`, `p50 ${percentile(times, 0.5).toFixed(1)} ` +
    `p95 ${percentile(times, 0.95).toFixed(1)} (n=${n}, new connection each)`);
}

// ------------------------------------------------------------------ checks --
try {
  const first = await guestGet(emulator, 80, "/__health", { deadlineMs: t0 + 60000 });
  result("restore_to_first_answer_ms", ms());
  check(first.status === 200, "nginx answers after the restore");

  const pingAt = performance.now();
  const ping = await pool({ op: "ping" });
  result("pool_ping_ms", Math.round(performance.now() - pingAt));
  check(ping.ok, `pool answers (pid ${ping.pid}, ${ping.preloaded?.length} modules preloaded)`);
  if (ping.failed && Object.keys(ping.failed).length) log(`preload failures: ${JSON.stringify(ping.failed)}`);

  // -- Flask
  let page = await launch("flaskdemo", 9001, FLASK_APP, "/app/flaskdemo/");
  check(page.text.includes('action="/app/flaskdemo/add"'), "flask: url_for includes SCRIPT_NAME");
  const form = Buffer.from("item=hello+v86");
  const posted = await guestRequest(emulator, 80, "POST", "/app/flaskdemo/add", form, {
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
  });
  check(posted.status === 302 && posted.headers.location === "/app/flaskdemo/",
    `flask: form POST -> ${posted.status} Location ${posted.headers.location}`);
  page = await guestGet(emulator, 80, "/app/flaskdemo/");
  check(page.text.includes("<li>hello v86</li>"), "flask: the posted item is listed");
  await latency("flaskdemo", "/app/flaskdemo/");
  page = await stopStart("flaskdemo", 9001, "/app/flaskdemo/");
  check(page.text.includes("<title>items v1</title>"), "flask: answers after stop and start");

  if (ONLY !== "flask") {
    // -- FastAPI
    const item = await launch("apidemo", 9002, FASTAPI_APP, "/app/apidemo/items/7");
    let json = JSON.parse(item.text);
    check(json.id === 7 && /\/app\/apidemo\/items\/7$/.test(json.self),
      `fastapi: JSON and url_for under root_path (${json.self})`);
    const bad = await guestGet(emulator, 80, "/app/apidemo/items/x");
    check(bad.status === 422, `fastapi: validation error -> ${bad.status}`);
    const created = await guestRequest(emulator, 80, "POST", "/app/apidemo/items",
      Buffer.from('{"name":"cup","price":2.5}'), { headers: { "Content-Type": "application/json" } });
    json = created.status === 200 ? JSON.parse(created.text) : {};
    check(json.name === "cup" && json.price === 2.5, `fastapi: POST JSON -> ${created.status}`);
    const docs = await guestGet(emulator, 80, "/app/apidemo/docs");
    check(docs.status === 200 && docs.text.includes("/app/apidemo/openapi.json"),
      "fastapi: /docs points at the prefixed openapi.json");
    await latency("apidemo", "/app/apidemo/items/1");
    await stopStart("apidemo", 9002, "/app/apidemo/items/1");

    // -- Django
    const hello = await launch("djdemo", 9003, DJANGO_APP, "/app/djdemo/");
    check(hello.text === "hello from django at /app/djdemo/", `django: reverse() (${hello.text})`);
    const login = await guestGet(emulator, 80, "/app/djdemo/admin/login/");
    check(login.status === 200 && login.text.includes('action="/app/djdemo/admin/login/"'),
      `django: admin login page -> ${login.status}`);
    const css = login.text.match(/href="([^"]*base\.css)"/)?.[1];
    const cssGot = css ? await guestGet(emulator, 80, css) : { status: 0 };
    check(css === "/app/djdemo/static/admin/css/base.css" && cssGot.status === 200,
      `django: admin CSS ${css} -> ${cssGot.status}`);
    await latency("djdemo", "/app/djdemo/");
    await stopStart("djdemo", 9003, "/app/djdemo/");
  }

  // -- Redeploy Flask with a new version: the agent stops the old process
  // and starts the new one (an agent that does not: stop and start here).
  const v2 = { ...FLASK_APP, "app.py": FLASK_APP["app.py"].replace("version=1", "version=2") };
  const redeployAt = performance.now();
  const put = await guestRequest(emulator, 8081, "PUT", "/v1/apps/flaskdemo", makeTar(v2), {
    timeoutMs: 180000,
  });
  check(put.status === 200, `flask: redeployed through the agent (${Math.round(put.ms)} ms)`);
  if (agentStarts) {
    const { got } = await firstOk("/app/flaskdemo/", performance.now() + 60000);
    page = got;
  } else {
    check((await pool({ op: "proxy", name: "flaskdemo", port: 9001 })).ok, "flask: proxy again");
    await stopApp("flaskdemo");
    page = await start("flaskdemo", 9001, "/app/flaskdemo/");
  }
  result("flaskdemo_redeploy_to_new_version_ms", Math.round(performance.now() - redeployAt));
  check(page.text.includes("<title>items v2</title>"), "flask: serves the new version");
  if (agentStarts) {
    // Each start begins a fresh log (the previous run's is <name>.log.1).
    const logs = await guestGet(emulator, 8081, "/v1/apps/flaskdemo/logs");
    const text = logs.status === 200 ? JSON.parse(logs.text).log : "";
    const starts = text.split("\n").filter((l) => l.startsWith("[pool] starting flaskdemo")).length;
    check(starts === 1 && !text.includes("exited") && !text.includes("killed"),
      `flask: the log shows the current run only (${starts} start line(s), ${text.length} bytes)`);
  }

  const status = await pool({ op: "status" });
  result("pool_status", JSON.stringify(status));
  check(status.ok, "pool status");
  const kb = (v) => (v === undefined ? "?" : `${(v / 1024).toFixed(1)} MiB`);
  result("pool_memory", `rss ${kb(status.pool?.rss_kb)} pss ${kb(status.pool?.pss_kb)}`);
  const running = Object.entries(status.apps ?? {}).filter(([, a]) => a.state === "running");
  for (const [name, a] of running) result(`${name}_memory`, `rss ${kb(a.rss_kb)} pss ${kb(a.pss_kb)}`);
  const mem = status.meminfo_kb ?? {};
  result("guest_memory", `MemTotal ${kb(mem.MemTotal)} MemFree ${kb(mem.MemFree)} ` +
    `MemAvailable ${kb(mem.MemAvailable)} with ${running.length} apps running`);
} catch (err) {
  log(`ERROR ${err.stack || err}`);
  failed = true;
}
clearTimeout(watchdog);
await emulator.destroy();
log(failed ? "RESULT: FAIL" : "RESULT: PASS");
process.exit(failed ? 1 : 0);
