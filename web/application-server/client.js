// A client for the Application Server's deploy API, for pages of the same
// origin (the Supabase Lite UI). It is plain fetch calls to
// /application-server/api/, which the service worker hands to the page that
// runs the VM; this module only adds waiting for loads and a hidden host
// frame. Every method resolves to the API's JSON or throws an
// AppServerError that keeps the API's stable `code`.
//
//   import { AppServer } from "/application-server/client.js";
//   const server = new AppServer();
//   await server.ensureHost();
//   await server.load("python", { onProgress: (s) => console.log(s.state) });
//   await server.deploy("hello", zipFile, { env: { GREETING: "hi" } });

/** An API error: HTTP `status`, stable `code` and a message that says what to do. */
export class AppServerError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "AppServerError";
    this.status = status;
    this.code = code;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class AppServer {
  /**
   * @param {{ base?: string, hostUrl?: string }} [options] where the API and
   *   the page that runs the VM live.
   */
  constructor({ base = "/application-server/api", hostUrl = "/application-server/" } = {}) {
    this.base = base;
    this.hostUrl = hostUrl;
    this.frame = null;
  }

  /** One API call; JSON in (for plain objects), JSON out. */
  async request(method, path, { body, headers = {} } = {}) {
    const response = await fetch(this.base + path, { method, body, headers });
    const type = response.headers.get("content-type") || "";
    const json = type.includes("application/json") ? await response.json() : null;
    if (!response.ok) {
      const error = json?.error;
      throw new AppServerError(
        response.status,
        error?.code || "http_" + response.status,
        error?.message || `${method} ${path} answered ${response.status}`,
      );
    }
    if (json === null) {
      throw new AppServerError(response.status, "not_api", `${method} ${path} did not answer JSON: is the service worker installed?`);
    }
    return json;
  }

  /**
   * Makes sure a page runs the VM: when none answers, opens the management
   * page in a hidden frame of this page and waits until it does.
   */
  async ensureHost({ timeoutMs = 30000 } = {}) {
    try {
      return await this.status();
    } catch (e) {
      if (!(e instanceof AppServerError) || !["not_running", "not_api", "http_404"].includes(e.code)) throw e;
    }
    if (!this.frame) {
      this.frame = document.createElement("iframe");
      this.frame.src = this.hostUrl;
      this.frame.hidden = true;
      this.frame.title = "Application Server";
      document.body.append(this.frame);
    }
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await sleep(250);
      try {
        if (navigator.serviceWorker?.controller) return await this.status();
      } catch (e) {
        if (Date.now() > deadline) throw e;
        continue;
      }
      if (Date.now() > deadline) {
        throw new AppServerError(503, "not_running", "The Application Server page did not start in time.");
      }
    }
  }

  environments() { return this.request("GET", "/environments"); }
  status() { return this.request("GET", "/status"); }
  apps() { return this.request("GET", "/apps"); }
  app(name) { return this.request("GET", `/apps/${encodeURIComponent(name)}`); }
  logs(name) { return this.request("GET", `/apps/${encodeURIComponent(name)}/logs`); }
  start(name) { return this.request("POST", `/apps/${encodeURIComponent(name)}/start`); }
  stop(name) { return this.request("POST", `/apps/${encodeURIComponent(name)}/stop`); }
  restart(name) { return this.request("POST", `/apps/${encodeURIComponent(name)}/restart`); }
  remove(name) { return this.request("DELETE", `/apps/${encodeURIComponent(name)}`); }

  /**
   * Loads (or switches to) environment `id` and resolves with its status once
   * it is ready; `onProgress` hears every status read on the way.
   */
  async load(id, { onProgress = () => {}, timeoutMs = 600000 } = {}) {
    await this.request("POST", `/environments/${encodeURIComponent(id)}/load`);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      let status;
      try {
        status = await this.status();
      } catch (e) {
        // A switch reloads the host page: for a moment nobody answers.
        if (e instanceof AppServerError && e.code === "not_running") {
          await sleep(500);
          continue;
        }
        throw e;
      }
      onProgress(status);
      if (status.environment === id && status.state === "ready") return status;
      if (status.environment === id && status.state === "error") {
        throw new AppServerError(503, status.error?.code || "load_failed", status.error?.message || "loading failed");
      }
      await sleep(500);
    }
    throw new AppServerError(504, "timeout", `${id} was not ready within ${timeoutMs / 1000} s`);
  }

  /**
   * Deploys `body` as app `name`: a ZIP or tar Blob/File, or a FormData of
   * files (their names are the paths). `env` is an object of variables;
   * `entry` and `port` override what the server detects.
   */
  deploy(name, body, { env = {}, entry, port } = {}) {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(env)) query.append("env", `${key}=${value}`);
    if (entry) query.set("entry", entry);
    if (port) query.set("port", String(port));
    const headers = {};
    if (!(body instanceof FormData)) {
      const tar = body.name?.endsWith(".tar") || body.type === "application/x-tar";
      headers["content-type"] = tar ? "application/x-tar" : "application/zip";
    }
    const q = query.toString();
    return this.request("PUT", `/apps/${encodeURIComponent(name)}${q ? "?" + q : ""}`, { body, headers });
  }
}
