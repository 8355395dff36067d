/*
 * Runs the Next.js app in the current folder as `next start` would, for the
 * nextjs image's warm pool (node-pool.js runs this file in a warm worker, in
 * the app's folder, with PORT and APPSERVER_PREFIX=/app/<name> set).
 *
 * Next.js bakes its basePath into the build, so the app is built for the
 * prefix it is served under: the app's own next.config (if any) is wrapped by
 * a next.config.mjs that sets basePath to APPSERVER_PREFIX. An upload that
 * brings a build for that basePath (`.next`, from `next build` with the same
 * basePath) starts at once; any other is built here first with `next build`,
 * which in the emulator takes minutes. The port answers at once either way:
 * while the build runs, every request gets a 503 page saying so, and the
 * build's output goes to the app's log. A failed build is remembered
 * (.next/appserver-build-failed), so that the supervisor's restarts of the
 * same upload end at once with the same error instead of building again.
 *
 *   node next.js            serve (building first if needed)
 *   node next.js --build    only build, then exit (the image's own warm-up
 *                           app is built this way, in a chroot)
 */
"use strict";

const fs = require("fs");
const http = require("http");
const path = require("path");
const childProcess = require("child_process");

const HOOKS = path.join(__dirname, "..", "next-hooks.js");
const CONFIG = "next.config.mjs";
const MARK = "// Application Server: basePath wrapper";
const FAILED = path.join(".next", "appserver-build-failed");

require(HOOKS);

/** Where the app is served; Next.js calls it basePath ("" at the root). */
function basePath() {
  const prefix = process.env.APPSERVER_PREFIX || "";
  return prefix === "/" ? "" : prefix.replace(/\/+$/, "");
}

/**
 * Makes next.config.mjs set basePath, keeping the app's own config: a
 * next.config.js or .mjs of the app is renamed next.config.app.js (.mjs) and
 * imported by the wrapper, which may return an object or a function.
 */
function wrapConfig(dir, base) {
  const wrapper = path.join(dir, CONFIG);
  let own = null;
  for (const name of ["next.config.mjs", "next.config.js"]) {
    const file = path.join(dir, name);
    if (!fs.existsSync(file)) continue;
    const text = name === CONFIG ? fs.readFileSync(file, "utf8") : "";
    if (text.startsWith(MARK)) {
      // Wrapped by an earlier start of this upload: keep what it imports.
      own = text.match(/import\("\.\/([^"]+)"\)/)?.[1] ?? null;
      break;
    }
    own = name.replace("next.config", "next.config.app");
    fs.renameSync(file, path.join(dir, own));
    break;
  }
  const load = own ? `(await import("./${own}")).default` : "{}";
  fs.writeFileSync(wrapper, `${MARK} (the app is served under ${JSON.stringify(base)}).
const own = ${load};
export default async function config(phase, options) {
  const base = typeof own === "function" ? await own(phase, options) : own;
  return { ...base, basePath: ${JSON.stringify(base)} };
}
`);
}

/** True when `.next` holds a finished build for `base`. */
function builtFor(dir, base) {
  try {
    fs.accessSync(path.join(dir, ".next", "BUILD_ID"));
    const routes = JSON.parse(fs.readFileSync(path.join(dir, ".next", "routes-manifest.json"), "utf8"));
    return (routes.basePath || "") === base;
  } catch (e) {
    return false;
  }
}

/** The `next` the app depends on: its own node_modules first, else the image's. */
function nextPackage(dir, sub = "") {
  return require.resolve(`next${sub}`, { paths: [dir, __dirname] });
}

/** Runs `next build` in `dir`; resolves to its exit code. */
function build(dir) {
  const bin = nextPackage(dir, "/dist/bin/next");
  const env = {
    ...process.env,
    NODE_ENV: "production",
    NEXT_TELEMETRY_DISABLED: "1",
    NODE_OPTIONS: `${process.env.NODE_OPTIONS || ""} -r ${HOOKS}`.trim(),
  };
  console.log(`[next] next build in ${dir} (basePath ${JSON.stringify(basePath())})`);
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = childProcess.spawn(process.execPath, [bin, "build"], { cwd: dir, env, stdio: "inherit" });
    child.on("error", (e) => {
      console.error(`[next] cannot run next build: ${e.message}`);
      resolve(1);
    });
    child.on("exit", (code, signal) => {
      console.log(`[next] next build ended (${signal || `code ${code}`}) after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      resolve(code ?? 1);
    });
  });
}

/** The page every request gets while the app is being built. */
function buildingPage(since) {
  return (req, res) => {
    const s = Math.round((Date.now() - since) / 1000);
    res.writeHead(503, { "Content-Type": "text/html; charset=utf-8", "Retry-After": "10", "Cache-Control": "no-store" });
    res.end(`<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=10>
<title>Building</title><h1>This Next.js app is being built</h1>
<p>It came without a build for where it is served, so <code>next build</code> is running inside the
VM (${s} s so far; in the emulator this takes minutes). This page reloads by itself; the app's log
shows the build's output. Deploy the output of <code>next build</code> (the <code>.next</code>
folder, built with <code>basePath: "${basePath()}"</code>) to skip this.</p>\n`);
  };
}

async function serve(dir) {
  const base = basePath();
  const port = Number(process.env.PORT);
  const host = "127.0.0.1";
  let handle = buildingPage(Date.now());
  // The worker answers /app/<name> with a redirect to /app/<name>/, and
  // Next.js the other way round: the app's root is asked for with the slash.
  const server = http.createServer((req, res) => {
    if (base && (req.url === `${base}/` || req.url.startsWith(`${base}/?`))) {
      req.url = base + req.url.slice(base.length + 1);
    }
    handle(req, res);
  });
  if (!builtFor(dir, base)) {
    if (fs.existsSync(path.join(dir, FAILED))) {
      console.error(`[next] next build failed for this upload (see above); deploy it again once it builds`);
      process.exit(1);
    }
    await new Promise((resolve) => server.listen(port, host, resolve));
    const code = await build(dir);
    if (code !== 0 || !builtFor(dir, base)) {
      fs.mkdirSync(path.join(dir, ".next"), { recursive: true });
      fs.writeFileSync(path.join(dir, FAILED), `next build: code ${code}\n`);
      console.error("[next] next build failed");
      process.exit(1);
    }
  }
  const t0 = Date.now();
  const next = require(nextPackage(dir));
  const app = next({ dir, dev: false, hostname: host, port });
  await app.prepare();
  handle = app.getRequestHandler();
  if (!server.listening) await new Promise((resolve) => server.listen(port, host, resolve));
  console.log(`[next] serving ${dir} under ${JSON.stringify(base)} on :${port} (ready in ${Date.now() - t0} ms)`);
}

const dir = process.cwd();
wrapConfig(dir, basePath());
if (process.argv.includes("--build")) {
  build(dir).then((code) => process.exit(code !== 0 || !builtFor(dir, basePath()) ? 1 : 0));
} else {
  serve(dir).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
