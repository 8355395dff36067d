// Service worker bootstrap. The logic is in Rust (sw/src); this file only
// exists because a service worker must be a script. The wasm module starts
// loading once, at top level, and every event waits on that one promise:
// the browser may stop and restart the worker at any time, and `install`
// does not run again after a restart.
import init, * as sw from "/pkg/sw.js";

const ready = init({ module_or_path: "/pkg/sw_bg.wasm" });
let loaded = false;
ready.then(() => { loaded = true; });

self.addEventListener("install", (event) => {
  event.waitUntil(ready.then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("message", (event) => {
  event.waitUntil(ready.then(() => sw.on_message(event)));
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (loaded) {
    if (sw.wants(request.url)) event.respondWith(sw.handle_fetch(request));
    return;
  }
  // Not instantiated yet (the worker just restarted): decide once it is.
  if (new URL(request.url).origin !== self.location.origin) return;
  event.respondWith(ready.then(() => (sw.wants(request.url) ? sw.handle_fetch(request) : fetch(request))));
});
