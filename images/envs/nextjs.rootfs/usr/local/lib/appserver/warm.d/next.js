/*
 * Warm-up of the nextjs image's pool workers (node-pool.js requires this file
 * with its preloads and runs warmUp after Express's): loads Next.js and
 * serves the image's own small app (next-warm-app, built when the image was
 * made) once, an SSR page of each router and an API route, so that the
 * server, React's renderer and Next's runtimes are loaded and compiled in
 * every idle worker before an app is handed to it. A worker given a Next.js
 * app then only loads that app's own pages.
 */
"use strict";

const http = require("http");
const path = require("path");

require("../next-hooks.js");
const next = require("next");

const APP = path.join(__dirname, "..", "next-warm-app");
const BASE = "/app/__warm";

/**
 * Next.js keeps some of its state in process.env (the whole config, as
 * __NEXT_PRIVATE_STANDALONE_CONFIG, which a later server in the same process
 * would take for its own): put process.env back as it was.
 */
async function keepingEnv(work) {
  const saved = { ...process.env };
  try {
    return await work();
  } finally {
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
    Object.assign(process.env, saved);
  }
}

async function warmUp(stop = () => false) {
  return keepingEnv(() => serveOnce(stop));
}

async function serveOnce(stop) {
  const app = next({ dir: APP, dev: false, hostname: "127.0.0.1", port: 0 });
  await app.prepare();
  const handle = app.getRequestHandler();
  const server = http.createServer((req, res) => handle(req, res));
  server.appserverWarmUp = true; // not the app's server: not reported
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  const get = (urlPath) => new Promise((resolve) => {
    if (stop()) return resolve();
    http.get({ host: "127.0.0.1", port, path: urlPath, agent: false }, (res) => {
      res.resume();
      res.on("end", resolve);
    }).on("error", resolve);
  });
  for (let round = 0; round < 2 && !stop(); round++) {
    for (const p of ["/", "/pages-ssr?n=1", "/api/hello", "/missing"]) await get(`${BASE}${p}`);
  }
  await new Promise((resolve) => server.close(resolve));
  await app.close?.();
}

module.exports = { warmUp };
