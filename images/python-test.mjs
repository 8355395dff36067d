#!/usr/bin/env node
// Checks the python image's warm pool after a state restore: starts a fresh
// v86 in Node from the image's warm state (as restore-test.mjs does), then
//   1. waits for nginx, and pings the pool over the serial console
//   2. deploys a Flask app (template + form POST + redirect) through the agent
//      (PUT /v1/apps/<name>, a ustar body), points nginx's /app/<name>/ at
//      127.0.0.1:<port> (the pool's temporary "proxy" op) and asks the pool
//      to start it; polls GET /app/<name>/ through nginx on :80 until 200
//   3. checks the URLs the app generates (SCRIPT_NAME /app/<name>), a form
//      POST and its redirect, and measures request latency
//   4. the same for a FastAPI app (root_path, JSON, validation error) and a
//      Django project (a view, the admin login page and its static files)
//   5. restarts the Flask app with a new version (stop + start)
//   6. prints the pool's status with memory figures
//
// The pool is asked over the serial console: lines "pool: {json}" in, lines
// "pool-reply: {json}" out (python-pool.py --serial; temporary until the agent
// has a supervisor endpoint that talks to /run/appserver/pool.sock).
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

/** Deploys, routes and starts one app; returns ms from "start" to the first 200. */
async function launch(name, port, files, path, kind = "auto") {
  const put = await guestRequest(emulator, 8081, "PUT", `/v1/apps/${name}`, makeTar(files), {
    timeoutMs: 60000,
  });
  log(`PUT /v1/apps/${name} -> ${put.status} ${put.text} (${Math.round(put.ms)} ms)`);
  check(put.status === 200, `${name}: deployed through the agent`);
  const proxyAt = performance.now();
  const proxied = await pool({ op: "proxy", name, port });
  log(`pool proxy ${name} -> ${JSON.stringify(proxied)} (${Math.round(performance.now() - proxyAt)} ms)`);
  check(proxied.ok, `${name}: nginx proxies /app/${name}/ to :${port}`);
  return start(name, port, path, kind);
}

async function start(name, port, path, kind = "auto") {
  const startAt = performance.now();
  let listeningMs = null;
  const started = pool({ op: "start", name, dir: `/srv/apps/${name}`, port, kind, wait: true })
    .then((reply) => {
      listeningMs = Math.round(performance.now() - startAt);
      log(`pool start ${name} -> ${JSON.stringify(reply)} (${listeningMs} ms)`);
      return reply;
    });
  // Poll through nginx like a browser would (502 until the app listens).
  let got;
  let polls = 0;
  for (;;) {
    polls++;
    got = await guestGet(emulator, 80, path, { timeoutMs: 30000 });
    if (got.status !== 502 || performance.now() - startAt > 120000) break;
    await sleep(100);
  }
  const firstMs = Math.round(performance.now() - startAt);
  const reply = await started;
  check(reply.ok && reply.state === "running", `${name}: the pool started it`);
  check(got.status === 200, `${name}: GET ${path} -> ${got.status} after ${polls} poll(s)`);
  result(`${name}_start_to_listening_ms`, listeningMs);
  result(`${name}_start_to_first_200_ms`, firstMs);
  result(`${name}_guest_ready_s`, reply.ready_s);
  return got;
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
  }

  // -- Redeploy Flask: new files, stop, start (the agent rewrites the nginx
  // snippet to a static one on every PUT, so "proxy" goes again first).
  const v2 = { ...FLASK_APP, "app.py": FLASK_APP["app.py"].replace("version=1", "version=2") };
  const put = await guestRequest(emulator, 8081, "PUT", "/v1/apps/flaskdemo", makeTar(v2));
  check(put.status === 200, "flask: redeployed through the agent");
  check((await pool({ op: "proxy", name: "flaskdemo", port: 9001 })).ok, "flask: proxy again");
  const stopAt = performance.now();
  const stopped = await pool({ op: "stop", name: "flaskdemo" });
  check(stopped.ok, "flask: stop");
  for (let i = 0; i < 100; i++) {
    const st = await pool({ op: "status" });
    if (st.apps.flaskdemo.state === "exited") break;
    await sleep(50);
  }
  result("flaskdemo_stop_ms", Math.round(performance.now() - stopAt));
  const restartAt = performance.now();
  page = await start("flaskdemo", 9001, "/app/flaskdemo/");
  result("flaskdemo_restart_to_new_version_ms", Math.round(performance.now() - restartAt));
  check(page.text.includes("<title>items v2</title>"), "flask: serves the new version");

  const status = await pool({ op: "status" });
  result("pool_status", JSON.stringify(status));
  check(status.ok, "pool status");
} catch (err) {
  log(`ERROR ${err.stack || err}`);
  failed = true;
}
clearTimeout(watchdog);
await emulator.destroy();
log(failed ? "RESULT: FAIL" : "RESULT: PASS");
process.exit(failed ? 1 : 0);
