// Types of /application-server/client.js, for TypeScript callers such as the
// Supabase Lite UI. They describe the JSON the deploy API answers with.

/** An API error: HTTP status, stable code (`unknown_app`, `not_running`, ...) and what to do. */
export declare class AppServerError extends Error {
  readonly status: number;
  readonly code: string;
}

export type VmState = "unloaded" | "loading" | "booting" | "restoring" | "ready" | "error";

export interface Environment {
  id: string;
  name: string;
  about: string;
  runs: string[];
  loaded: boolean;
}

export interface Status {
  environment: string | null;
  state: VmState;
  /** While loading: bytes fetched of the file being fetched. */
  progress?: { loaded: number; total: number; file: string };
  /** After a failed load. */
  error?: { code: string; message: string };
  /** When ready. */
  version?: string;
  ready_ms?: number | null;
  uptime_s?: number;
  memory_kb?: { MemTotal?: number; MemFree?: number; MemAvailable?: number };
  apps?: string[];
}

export type AppState = "static" | "starting" | "running" | "restarting" | "stopped" | "error";

export interface App {
  name: string;
  /** `static`, `express`, `node`, `next`, `flask`, `fastapi`, `django`, `wsgi`, `asgi`. */
  kind: string;
  kind_label: string;
  state: AppState;
  url: string;
  port: number | null;
  entry: string;
  command: string;
  reason: string;
  env: Record<string, string>;
  files: number;
  bytes: number;
  rss_kb: number | null;
  restarts: number;
  error: string | null;
  requests: number;
  timings_ms: Record<string, number>;
}

export interface DeployOptions {
  env?: Record<string, string>;
  /** The module or script to start instead of the detected one. */
  entry?: string;
  port?: number;
}

export declare class AppServer {
  constructor(options?: { base?: string; hostUrl?: string });
  request<T = unknown>(method: string, path: string, init?: { body?: BodyInit; headers?: Record<string, string> }): Promise<T>;
  ensureHost(options?: { timeoutMs?: number }): Promise<Status>;
  environments(): Promise<{ current: string | null; environments: Environment[] }>;
  status(): Promise<Status>;
  load(id: string, options?: { onProgress?: (status: Status) => void; timeoutMs?: number }): Promise<Status>;
  apps(): Promise<{ apps: App[] }>;
  app(name: string): Promise<{ app: App }>;
  logs(name: string): Promise<{ name: string; log: string }>;
  deploy(name: string, body: Blob | File | FormData, options?: DeployOptions): Promise<{
    app: App;
    stored_bytes?: number;
    stored_error?: { code: string; message: string };
  }>;
  start(name: string): Promise<{ app: App }>;
  stop(name: string): Promise<{ app: App }>;
  restart(name: string): Promise<{ app: App }>;
  remove(name: string): Promise<{ deleted: string }>;
}
