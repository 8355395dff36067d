#!/usr/bin/python3
"""Warm pool of the python image: starts Python web apps without a cold start.

In v86 a new python3 process is slow (interpreter start, then `import flask`
takes 14-28 s), and after a restore of the saved VM state everything started
anew is cold, while processes that were already running in the state are
fast. So appserver-init starts this program before the state is saved: it
imports the frameworks once (flask, werkzeug's server, fastapi, uvicorn,
django), then waits for requests on a Unix socket and forks one child per
app. The child already has everything imported: it only imports the app's
own module and serves it on 127.0.0.1:<port>; the parent stays as it was,
so the pool never needs refilling.

Protocol: a client connects to /run/appserver/pool.sock, sends one JSON
object on one line and reads one JSON line back; then the pool closes.

  {"op": "ping"}
      -> {"ok": true, "pid": N, "preloaded": [...], "failed": {...}}
  {"op": "start", "name": "demo", "dir": "/srv/apps/demo", "port": 9001,
   "kind": "auto", "entry": null, "env": {}, "log": null, "wait": false}
      kind: auto | wsgi | asgi | django. entry: "module:attribute" (default:
      found from the files, see find_app). prefix: the URL prefix the app is
      served under, default /app/<name>. log: the file its stdout and stderr
      go to, default /var/log/appserver/<name>.log (see "Logs" below).
      "access_log": true logs every request there too (off by default: it
      doubles the server's time per request in v86). With "wait": true the
      answer comes once the app listens (or has exited).
      -> {"ok": true, "pid": N, "state": "starting" | "running"}
      -> {"ok": false, "error": "...", "state": "exited", "code": 1,
          "signal": null, "ended": unix time}
  {"op": "stop", "name": "demo"}   SIGTERM to the app's process group, SIGKILL
      after 5 s -> {"ok": true, "pid": N}
  {"op": "status"} -> {"ok": true, "apps": {"demo": {"pid", "port", "kind",
      "dir", "log", "state": "starting" | "running" | "exited",
      "started": unix time, "ready_s": start-to-listening seconds,
      "code": exit status or null, "signal": number of the signal that
      ended it or null, "ended": unix time or null (all three are set once
      the state is "exited"; code and signal exclude each other),
      "rss_kb", "pss_kb" (not for exited apps; Pss is refreshed at most every
      30 s)}}, "pool": {"rss_kb", "pss_kb"},
      "meminfo_kb": {"MemTotal", "MemFree", "MemAvailable"}}
  {"op": "warm"}   runs the frameworks' warm-up once more in a throwaway
      child at nice 19 (the agent asks after a state restore, when v86 has
      no compiled code) -> {"ok": true, "pid": N}
  {"op": "proxy", "name": "demo", "port": 9001}   TEMPORARY, for
      images/python-test.mjs until the agent writes proxy snippets: writes
      /etc/nginx/apps/<name>.conf proxying /app/<name>/ to the port and
      reloads nginx -> {"ok": true}

Logs: every "start" first renames the app's log to <log>.1 (replacing the
one before), then the new run writes a fresh file from its first line: the
log always shows the current run, and <log>.1 the previous one (a crash
before a redeploy stays readable). The pool appends a last line when the app
ends: "[pool] <name> exited with code N" or "... killed by signal N (SIGTERM)".

Each app's pid is kept in /run/appserver/python-pool.apps/<name>.pid while it
runs. appserver-init restarts a pool that died; the new one first ends the
apps those files name (its own restarts of them would find their ports
taken), and the agent's supervisor then starts them again.

The app sees its URL prefix: SCRIPT_NAME for WSGI, root_path for ASGI, with
the prefix taken off the path when nginx passes the full URI.

With --serial DEV (temporary, for tests) lines "pool: {json}" read from that
tty are handled like socket requests and answered as "pool-reply: {json}".
"""

import gc
import json
import os
import re
import selectors
import signal
import socket
import sys
import time

# Other folders only for the host's tests (tests/host/python-pool.test.mjs).
RUN_DIR = os.environ.get("PYTHON_POOL_RUN_DIR", "/run/appserver")
SOCKET = f"{RUN_DIR}/pool.sock"
READY_FILE = f"{RUN_DIR}/python-pool.ready"
LOG_DIR = os.environ.get("PYTHON_POOL_LOG_DIR", "/var/log/appserver")
# <name>.pid for every app process this pool started and has not yet seen end.
PID_DIR = f"{RUN_DIR}/python-pool.apps"
STOP_GRACE_S = 5

# Modules imported before any app starts; what fails to import is reported by
# "ping" and otherwise ignored (the app then imports it itself, cold).
PRELOAD = [
    # WSGI: Flask and the server that runs WSGI apps here (werkzeug's).
    "flask", "flask.json.provider", "flask.templating", "jinja2.ext",
    "werkzeug.serving", "werkzeug.middleware.proxy_fix", "werkzeug.debug",
    "socketserver", "http.server", "wsgiref.simple_server",
    # ASGI: FastAPI (starlette, pydantic) and what uvicorn's Config.load()
    # imports by name.
    "fastapi", "fastapi.staticfiles", "fastapi.templating", "fastapi.responses",
    "starlette.middleware.cors", "starlette.staticfiles",
    "uvicorn", "uvicorn.config", "uvicorn.server", "uvicorn.logging",
    "uvicorn.protocols.http.h11_impl", "uvicorn.protocols.websockets.wsproto_impl",
    "uvicorn.lifespan.on", "uvicorn.loops.asyncio", "logging.config",
    "asyncio", "asyncio.unix_events",
    # Django: what can be imported without settings.
    "django", "django.core.wsgi", "django.core.handlers.wsgi", "django.urls",
    "django.http", "django.shortcuts", "django.views.generic", "django.db.models",
    "django.forms", "django.template.backends.django", "django.core.management",
    "django.contrib.staticfiles.handlers", "django.db.backends.sqlite3.base",
    "django.middleware.common", "django.middleware.csrf", "django.middleware.security",
    "django.contrib.sessions.middleware", "django.contrib.messages.middleware",
    "django.middleware.clickjacking",
    "django.contrib.auth.hashers", "django.template.defaulttags",
    "django.template.loader_tags", "django.templatetags.static",
    # ... and what a startproject project loads in django.setup() and its
    # first admin request, short of models and forms (those need settings).
    # Halves a Django app's start (natively 0.08 s -> 0.04 s).
    "django.contrib.admin", "django.contrib.admin.views.main", "django.contrib.admin.checks",
    "django.contrib.admin.templatetags.admin_list", "django.contrib.admin.templatetags.admin_urls",
    "django.contrib.admin.templatetags.admin_modify", "django.contrib.admin.apps",
    "django.contrib.auth.apps", "django.contrib.auth.context_processors",
    "django.contrib.contenttypes.apps", "django.contrib.sessions.apps",
    "django.contrib.sessions.backends.db", "django.contrib.sessions.serializers",
    "django.contrib.messages.apps", "django.contrib.messages.context_processors",
    "django.contrib.staticfiles.apps", "django.contrib.staticfiles.finders",
    "django.contrib.staticfiles.storage", "django.contrib.staticfiles.views",
    "django.template.context_processors", "django.template.loaders.cached",
    "django.template.loaders.app_directories", "django.template.loaders.filesystem",
    "django.templatetags.i18n", "django.templatetags.cache", "django.templatetags.l10n",
    "django.templatetags.tz", "django.core.checks", "django.core.signing",
    "django.db.backends.sqlite3.features", "django.db.backends.sqlite3.operations",
    "django.db.backends.sqlite3.schema", "django.db.backends.sqlite3.introspection",
    "django.db.backends.sqlite3.client", "django.db.backends.sqlite3.creation",
    # gunicorn-compatible apps (module:app) need nothing more; its own
    # modules, for apps importing them.
    "gunicorn", "gunicorn.util",
    "sqlite3", "json", "email.utils", "uuid", "secrets", "hashlib", "hmac",
]

apps = {}          # name -> dict(pid, port, kind, state, code, signal, started, ...)
by_pid = {}        # pid -> name
ready_pipes = {}   # read end fd -> name
waiters = {}       # name -> [reply functions], for "start" with "wait"
kill_at = {}       # pid -> monotonic deadline for SIGKILL


def log(msg):
    print(f"python-pool: {msg}", flush=True)


def preload():
    preloaded, failed = [], {}
    for name in PRELOAD:
        try:
            __import__(name)
            preloaded.append(name)
        except Exception as e:  # noqa: BLE001 (report, do not die)
            failed[name] = f"{type(e).__name__}: {e}"
    return preloaded, failed


def compat():
    """Debian pairs FastAPI 0.92 with Starlette 0.26, whose url_for returns a
    URL object instead of the str FastAPI 0.92 was written for; its JSON
    encoder then writes {"_url": "..."}. Encode a URL as its string, as
    later FastAPI versions (and url_for before 0.26) do."""
    from pydantic.json import ENCODERS_BY_TYPE
    from starlette.datastructures import URL
    ENCODERS_BY_TYPE.setdefault(URL, str)


def warm_up():
    """Runs a request through Flask, Jinja2 and FastAPI once, so that what
    they import or compile lazily on first use (url maps, template lexer,
    pydantic validators) is already in the parent's memory."""
    import asyncio
    import flask
    import fastapi

    app = flask.Flask("warmup")

    @app.route("/<int:n>", methods=["GET", "POST"])
    def page(n):
        return flask.render_template_string(
            "{% for i in range(n) %}<a href='{{ url_for('page', n=i) }}'>{{ i }}</a>{% endfor %}",
            n=n)
    app.test_client().get("/2")

    api = fastapi.FastAPI()

    @api.get("/items/{item_id}")
    def item(item_id: int, q: str = ""):
        return {"id": item_id, "q": q}

    async def call():
        sent = []
        scope = {"type": "http", "http_version": "1.1", "method": "GET",
                 "path": "/items/1", "raw_path": b"/items/1", "root_path": "",
                 "query_string": b"q=x", "headers": [(b"host", b"x")],
                 "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)
        await api(scope, receive, send)
        return sent
    asyncio.run(call())


# ---------------------------------------------------------------- the child --

def find_app(kind, entry, prefix):
    """Returns (kind, app object) for the app in the current folder; a Django
    app comes back as kind "django", already serving under `prefix`."""
    import importlib
    if kind == "django" or (kind == "auto" and not entry and os.path.exists("manage.py")
                            and not any(os.path.exists(f) for f in
                                        ("app.py", "wsgi.py", "asgi.py", "main.py"))):
        if not os.environ.get("DJANGO_SETTINGS_MODULE"):
            with open("manage.py", encoding="utf-8") as f:
                m = re.search(r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([\w.]+)", f.read())
            if not m:
                raise RuntimeError("manage.py does not name DJANGO_SETTINGS_MODULE")
            os.environ["DJANGO_SETTINGS_MODULE"] = m.group(1)
        from django.conf import settings
        from django.core.wsgi import get_wsgi_application
        # Django prefixes only a relative STATIC_URL with SCRIPT_NAME, and
        # startproject writes an absolute "/static/".
        static_url = getattr(settings, "STATIC_URL", None) or ""
        if static_url.startswith("/") and not static_url.startswith(prefix + "/"):
            settings.STATIC_URL = prefix + static_url
        # Compile templates once per process even with DEBUG (as without):
        # every deploy restarts the app anyway, and re-reading the admin's
        # templates on each request makes it ~2.5x slower.
        for backend in settings.TEMPLATES:
            options = backend.setdefault("OPTIONS", {})
            if backend.get("BACKEND", "").endswith(".DjangoTemplates") and "loaders" not in options:
                loaders = ["django.template.loaders.filesystem.Loader"]
                if backend.get("APP_DIRS"):
                    loaders.append("django.template.loaders.app_directories.Loader")
                backend["APP_DIRS"] = False
                options["loaders"] = [("django.template.loaders.cached.Loader", loaders)]
        app = wsgi_with_prefix(get_wsgi_application(), prefix)
        if settings.DEBUG and "django.contrib.staticfiles" in settings.INSTALLED_APPS:
            # As runserver does; it sees the full path, as STATIC_URL has it.
            from django.contrib.staticfiles.handlers import StaticFilesHandler
            app = StaticFilesHandler(app)
        return "django", app
    if entry:
        module, _, attr = entry.partition(":")
        candidates = [(module, [attr] if attr else ["app", "application"])]
    else:
        names = {"wsgi": ["wsgi", "app", "main"], "asgi": ["asgi", "main", "app"]}
        names = names.get(kind, ["app", "wsgi", "asgi", "main"])
        candidates = [(n, ["app", "application"]) for n in names if os.path.exists(n + ".py")]
        if not candidates:
            raise RuntimeError("no app.py, wsgi.py, asgi.py or main.py")
    module, attrs = candidates[0]
    mod = importlib.import_module(module)
    app = next((getattr(mod, a) for a in attrs if getattr(mod, a, None) is not None), None)
    if app is None and callable(getattr(mod, "create_app", None)):
        app = mod.create_app()
    if app is None:
        raise RuntimeError(f"{module}.py has no {' or '.join(attrs)}")
    if kind == "auto":
        import inspect
        call = app if inspect.isfunction(app) else getattr(app, "__call__", None)
        kind = "asgi" if inspect.iscoroutinefunction(call) else "wsgi"
    return kind, app


def strip_prefix(path, prefix):
    if path == prefix or path.startswith(prefix + "/"):
        return path[len(prefix):] or "/"
    return path


def wsgi_with_prefix(app, prefix):
    def wrapped(environ, start_response):
        environ["PATH_INFO"] = strip_prefix(environ.get("PATH_INFO", "/"), prefix)
        environ["SCRIPT_NAME"] = prefix
        return app(environ, start_response)
    return wrapped


def asgi_with_prefix(app, prefix):
    async def wrapped(scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope = dict(scope, root_path=prefix, path=strip_prefix(scope["path"], prefix))
            if scope.get("raw_path"):
                scope["raw_path"] = strip_prefix(scope["raw_path"].decode("latin-1"),
                                                 prefix).encode("latin-1")
        return await app(scope, receive, send)
    return wrapped


def run_child(req, ready_w, log_fd):
    """In the forked child: become the app. Never returns."""
    code = 1
    try:
        os.setsid()
        # stdout and stderr to the log the parent opened (fresh for this run),
        # stdin from /dev/null. Then keep only those and the ready pipe (as fd
        # 3): the pool's socket, its clients, the serial line and other apps'
        # pipes are the parent's. (The Python objects owning those fds are
        # never finalized here: this function never returns.)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        if ready_w != 3:
            os.dup2(ready_w, 3)
            ready_w = 3
        os.closerange(4, 65536)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        gc.enable()
        os.chdir(req["dir"])
        sys.path.insert(0, req["dir"])
        sys.argv = [os.path.join(req["dir"], "app")]
        sys.dont_write_bytecode = True
        port = int(req["port"])
        prefix = req.get("prefix") or f"/app/{req['name']}"
        access_log = bool(req.get("access_log"))
        os.environ.update({str(k): str(v) for k, v in (req.get("env") or {}).items()})
        os.environ.setdefault("PORT", str(port))
        os.environ["SCRIPT_NAME"] = prefix
        started = time.monotonic()
        print(f"[pool] starting {req['name']} from {req['dir']} on 127.0.0.1:{port}", flush=True)
        kind, app = find_app(req.get("kind") or "auto", req.get("entry"), prefix)
        if kind == "asgi":
            import uvicorn
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
            config = uvicorn.Config(asgi_with_prefix(app, prefix), http="h11", ws="wsproto",
                                    loop="asyncio", lifespan="auto", log_level="info",
                                    access_log=access_log, proxy_headers=False,
                                    server_header=False)
            server = uvicorn.Server(config)
            print(f"[pool] {kind} app loaded in {time.monotonic() - started:.2f} s", flush=True)
            os.write(ready_w, b"L")
            os.close(ready_w)
            server.run(sockets=[sock])
        else:
            from werkzeug.serving import WSGIRequestHandler, make_server
            if kind != "django":
                app = wsgi_with_prefix(app, prefix)

            class Handler(WSGIRequestHandler):
                if not access_log:
                    def log_request(self, *args, **kwargs):
                        pass
            server = make_server("127.0.0.1", port, app, threaded=True, request_handler=Handler)
            print(f"[pool] {kind} app loaded in {time.monotonic() - started:.2f} s", flush=True)
            os.write(ready_w, b"L")
            os.close(ready_w)
            # The poll interval only delays shutdown(), which is not used; a
            # long one saves wake-ups of the emulated CPU.
            server.serve_forever(poll_interval=60)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 (the log is where errors go)
        import traceback
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# --------------------------------------------------------------- the parent --

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
# Pss walks every page table entry of the process: ~100-400 ms of emulated
# CPU per process in v86, and the agent asks for "status" every 2 s. So the
# Pss figures are refreshed at most this often; Rss is always current.
PSS_MAX_AGE_S = 30
pss_cache = {}     # pid -> (monotonic time, pss_kb)


def memory(pid=None):
    """kB figures of a process (default: the pool): rss_kb, resident now
    (statm, cheap), and pss_kb, its shared pages divided among the processes
    sharing them (smaps_rollup, at most PSS_MAX_AGE_S old)."""
    pid = pid or os.getpid()
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as f:
            figures = {"rss_kb": int(f.read().split()[1]) * PAGE_KB}
    except (OSError, IndexError, ValueError):
        return {}
    now = time.monotonic()
    cached = pss_cache.get(pid)
    if cached and now - cached[0] < PSS_MAX_AGE_S:
        figures["pss_kb"] = cached[1]
        return figures
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            pss = next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration, IndexError, ValueError):
        return figures
    pss_cache[pid] = (now, pss)
    figures["pss_kb"] = pss
    return figures


def meminfo():
    with open("/proc/meminfo", encoding="ascii") as f:
        rows = dict(line.split(":", 1) for line in f)
    return {k: int(rows[k].split()[0]) for k in ("MemTotal", "MemFree", "MemAvailable")}


def app_status(name):
    a = apps[name]
    st = {k: a.get(k) for k in ("pid", "port", "kind", "dir", "state", "code", "signal",
                                "started", "ended", "ready_s", "log")}
    if a["state"] != "exited":
        st.update(memory(a["pid"]))
    return st


def open_new_log(path):
    """Keeps the previous run's log as <path>.1 and opens an empty <path>
    for this run (append mode, so the pool's own last line cannot overwrite
    what the app wrote). Returns the fd; the parent closes it after fork."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        os.replace(path, path + ".1")
    except FileNotFoundError:
        pass
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC,
                   0o644)


def append_log(path, line):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def start(req, reply):
    name, port = req.get("name"), req.get("port")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name):
        return reply({"ok": False, "error": "bad or missing name"})
    if not isinstance(port, int) or not 1024 <= port <= 65535:
        return reply({"ok": False, "error": "bad or missing port"})
    if not os.path.isdir(req.get("dir") or ""):
        return reply({"ok": False, "error": f"no folder {req.get('dir')!r}"})
    old = apps.get(name)
    if old and old["state"] != "exited":
        return reply({"ok": False, "error": f"{name} is running (pid {old['pid']})",
                      **app_status(name)})
    log_path = req.get("log") or f"{LOG_DIR}/{name}.log"
    try:
        log_fd = open_new_log(log_path)
    except OSError as e:
        return reply({"ok": False, "error": f"cannot open the log {log_path}: {e}"})
    ready_r, ready_w = os.pipe()
    os.set_blocking(ready_r, False)
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        run_child(req, ready_w, log_fd)
    os.close(ready_w)
    os.close(log_fd)
    apps[name] = {"pid": pid, "port": port, "kind": req.get("kind") or "auto",
                  "dir": req["dir"], "state": "starting", "code": None, "signal": None,
                  "started": time.time(), "ended": None, "t0": time.monotonic(),
                  "ready_s": None, "log": log_path, "ready_fd": ready_r}
    by_pid[pid] = name
    write_pid_file(name, pid)
    ready_pipes[ready_r] = name
    sel.register(ready_r, selectors.EVENT_READ, on_ready_pipe)
    if req.get("wait"):
        waiters.setdefault(name, []).append(reply)
    else:
        reply({"ok": True, "pid": pid, "state": "starting"})


def on_ready_pipe(fd):
    # A child that exits before listening closes its pipe and raises SIGCHLD
    # together; when both arrive in one select(), reap() may have closed
    # this pipe already (its fd may even belong to a newer pipe by now).
    name = ready_pipes.get(fd)
    if name is None:
        return
    try:
        data = os.read(fd, 1)
    except BlockingIOError:
        return
    del ready_pipes[fd]
    sel.unregister(fd)
    os.close(fd)
    a = apps[name]
    a["ready_fd"] = None
    if data == b"L" and a["state"] == "starting":
        a["state"] = "running"
        a["ready_s"] = round(time.monotonic() - a["t0"], 3)
        for reply in waiters.pop(name, []):
            reply({"ok": True, "pid": a["pid"], "state": "running", "ready_s": a["ready_s"]})


def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        kill_at.pop(pid, None)
        pss_cache.pop(pid, None)
        name = by_pid.pop(pid, None)
        if name is None or apps[name]["pid"] != pid:
            continue
        a = apps[name]
        a["state"] = "exited"
        a["ended"] = time.time()
        remove_pid_file(name, pid)
        if os.WIFSIGNALED(status):
            a["signal"] = os.WTERMSIG(status)
            how = f"killed by signal {a['signal']} ({signal.Signals(a['signal']).name})"
        else:
            a["code"] = os.waitstatus_to_exitcode(status)
            how = f"exited with code {a['code']}"
        how += f" after {a['ended'] - a['started']:.1f} s"
        append_log(a["log"], f"[pool] {name} {how}")
        log(f"{name} (pid {pid}) {how}")
        if a.get("ready_fd") is not None:
            fd = a["ready_fd"]
            ready_pipes.pop(fd, None)
            sel.unregister(fd)
            os.close(fd)
            a["ready_fd"] = None
        for reply in waiters.pop(name, []):
            # "exited before listening" is what clients look for; keep it.
            reply({"ok": False, "error": f"{name} exited before listening ({how}); "
                                         f"see {a['log']}",
                   "state": "exited", "code": a["code"], "signal": a["signal"],
                   "ended": a["ended"]})


def write_pid_file(name, pid):
    try:
        os.makedirs(PID_DIR, exist_ok=True)
        with open(f"{PID_DIR}/{name}.pid", "w", encoding="ascii") as f:
            f.write(f"{pid}\n")
    except OSError as e:
        log(f"cannot record {name}'s pid: {e}")


def remove_pid_file(name, pid):
    path = f"{PID_DIR}/{name}.pid"
    try:
        with open(path, encoding="ascii") as f:
            if f.read().strip() == str(pid):
                os.unlink(path)
    except OSError:
        pass


def alive(pid):
    """True while `pid` runs (not a zombie waiting to be reaped by init)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def end_orphans():
    """Ends the apps a previous pool started: a pool that died and was
    restarted (appserver-init restarts it) does not know them, while they
    still hold their ports, so the supervisor's restarts of those apps
    would fail forever. Each was a session leader (setsid), which tells it
    from an unrelated process that got the same pid since."""
    try:
        names = os.listdir(PID_DIR)
    except FileNotFoundError:
        return
    pids = []
    for entry in names:
        path = f"{PID_DIR}/{entry}"
        try:
            with open(path, encoding="ascii") as f:
                pid = int(f.read().strip())
            os.unlink(path)
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                session = int(f.read().rsplit(")", 1)[1].split()[3])
        except (OSError, ValueError, IndexError):
            continue
        if session == pid:
            log(f"ending {entry[:-4]} (pid {pid}), started by an earlier pool")
            kill(pid, signal.SIGTERM)
            pids.append(pid)
    deadline = time.monotonic() + STOP_GRACE_S
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [p for p in pids if alive(p)]
    for pid in pids:
        kill(pid, signal.SIGKILL)


def kill(pid, sig):
    """Signals the app's process group (the app and what it spawned); the
    app itself if it has not yet made its group (setsid, first thing after
    fork)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop(req, reply):
    a = apps.get(req.get("name"))
    if not a:
        return reply({"ok": False, "error": "no such app"})
    if a["state"] != "exited":
        kill(a["pid"], signal.SIGTERM)
        kill_at[a["pid"]] = time.monotonic() + STOP_GRACE_S
    reply({"ok": True, "pid": a["pid"]})


PROXY_CONF = """\
# Written by python-pool (temporary, for tests) for app {name}.
location = /app/{name} {{ return 301 /app/{name}/; }}
location /app/{name}/ {{
    proxy_pass http://127.0.0.1:{port};
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Prefix /app/{name};
    proxy_buffering off;
    add_header X-Appserver-App {name} always;
    add_header X-Appserver-Upstream {port} always;
}}
"""


def nginx_proxies(name, port):
    """True once the running nginx routes /app/<name>/ to the port."""
    try:
        with socket.create_connection(("127.0.0.1", 80), timeout=2) as s:
            s.sendall(f"HEAD /app/{name}/ HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            head = s.recv(8192).lower()
    except OSError:
        return False
    return f"\r\nx-appserver-upstream: {port}\r\n".encode() in head


def proxy(req, reply):
    name, port = req.get("name"), req.get("port")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name) \
            or not isinstance(port, int):
        return reply({"ok": False, "error": "bad name or port"})
    path = f"/etc/nginx/apps/{name}.conf"
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(PROXY_CONF.format(name=name, port=port))
    os.rename(path + ".tmp", path)
    pid = os.posix_spawn("/usr/sbin/nginx", ["nginx", "-s", "reload"], os.environ)
    _, status = os.waitpid(pid, 0)
    # The reload is asynchronous: old workers answer until the new ones run.
    deadline = time.monotonic() + 10
    while status == 0 and not nginx_proxies(name, port):
        if time.monotonic() > deadline:
            return reply({"ok": False, "error": "nginx did not pick up the snippet in 10 s"})
        time.sleep(0.05)
    reply({"ok": status == 0, "nginx_status": status})


def warm(reply):
    """After a restore v86 has none of the guest's code compiled: runs the
    warm-up in a throwaway child at the lowest priority, so that the first
    app started afterwards (fork, Flask, FastAPI) does not pay for it."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.nice(19)
            os.closerange(3, 65536)
            warm_up()
        except BaseException:  # noqa: BLE001 (a failed warm-up only costs time)
            code = 1
        os._exit(code)
    reply({"ok": True, "pid": pid})


def handle(line, reply):
    try:
        req = json.loads(line)
        op = req.get("op")
        if op == "start":
            start(req, reply)
        elif op == "stop":
            stop(req, reply)
        elif op == "status":
            reply({"ok": True, "apps": {n: app_status(n) for n in apps},
                   "pool": memory(), "meminfo_kb": meminfo()})
        elif op == "ping":
            reply({"ok": True, "pid": os.getpid(), "preloaded": PRELOADED, "failed": FAILED})
        elif op == "proxy":
            proxy(req, reply)
        elif op == "warm":
            warm(reply)
        else:
            reply({"ok": False, "error": f"unknown op {op!r}"})
    except Exception as e:  # noqa: BLE001 (answer, keep serving)
        reply({"ok": False, "error": f"{type(e).__name__}: {e}"})


def on_client(conn):
    sel.unregister(conn)
    conn.settimeout(2)
    buf = b""
    try:
        while b"\n" not in buf and len(buf) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            buf += chunk
    except OSError:
        conn.close()
        return

    def reply(obj):
        try:
            conn.sendall(json.dumps(obj).encode() + b"\n")
        except OSError:
            pass
        conn.close()
    handle(buf.split(b"\n", 1)[0], reply)


def on_listener(lsock):
    conn, _ = lsock.accept()
    sel.register(conn, selectors.EVENT_READ, on_client)


serial_buf = b""


def on_serial(fd):
    global serial_buf
    serial_buf += os.read(fd, 4096)
    *lines, serial_buf = serial_buf.split(b"\n")
    for line in lines:
        line = line.strip()
        if line.startswith(b"pool:"):
            def reply(obj):
                os.write(serial_out, b"pool-reply: " + json.dumps(obj).encode() + b"\n")
            handle(line[5:], reply)


def on_wakeup(fd):
    os.read(fd, 512)
    reap()


def main():
    global sel, serial_out, PRELOADED, FAILED
    t0 = time.monotonic()
    try:
        os.unlink(READY_FILE)
    except FileNotFoundError:
        pass
    end_orphans()
    gc.disable()  # collecting during the imports only costs time
    PRELOADED, FAILED = preload()
    try:
        compat()
    except Exception as e:  # noqa: BLE001
        FAILED["compat"] = f"{type(e).__name__}: {e}"
    try:
        warm_up()
    except Exception as e:  # noqa: BLE001
        FAILED["warm_up"] = f"{type(e).__name__}: {e}"
    gc.collect()
    # Children then never touch the preloaded objects' GC headers, so their
    # memory stays shared with this process instead of being copied page by page.
    gc.freeze()
    gc.enable()
    for name, why in FAILED.items():
        log(f"could not preload {name}: {why}")

    os.makedirs(os.path.dirname(SOCKET), exist_ok=True)
    sel = selectors.PollSelector()   # no kernel-side state shared with children
    try:
        os.unlink(SOCKET)
    except FileNotFoundError:
        pass
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(SOCKET)
    os.chmod(SOCKET, 0o600)
    lsock.listen(16)
    sel.register(lsock, selectors.EVENT_READ, on_listener)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    sel.register(wake_r, selectors.EVENT_READ, on_wakeup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    if "--serial" in sys.argv:
        import termios
        dev = sys.argv[sys.argv.index("--serial") + 1]
        serial_in = os.open(dev, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        serial_out = os.open(dev, os.O_WRONLY | os.O_NOCTTY)
        attrs = termios.tcgetattr(serial_in)
        attrs[3] &= ~(termios.ECHO | termios.ECHONL)
        termios.tcsetattr(serial_in, termios.TCSANOW, attrs)
        sel.register(serial_in, selectors.EVENT_READ, on_serial)

    with open(READY_FILE, "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    log(f"ready in {time.monotonic() - t0:.1f} s: {len(PRELOADED)} modules preloaded, "
        f"{len(sys.modules)} in memory; {SOCKET}")

    while True:
        timeout = None
        if kill_at:
            timeout = max(0.0, min(kill_at.values()) - time.monotonic())
        for key, _ in sel.select(timeout):
            try:
                key.data(key.fileobj)
            except Exception:  # noqa: BLE001 (one bad event must not end every app's pool)
                import traceback
                log(f"error handling {key.fileobj!r}:\n{traceback.format_exc()}")
        now = time.monotonic()
        for pid, deadline in list(kill_at.items()):
            if deadline <= now:
                del kill_at[pid]
                kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
