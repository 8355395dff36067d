// scratch: time Express redeploys with the guest's step timings
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launch, openServer, deployFolder, fixture, firstAnswer } from "./e2e/harness.mjs";
import { newVersion, openEnvironment } from "./bench/envs.mjs";

const browser = await launch();
const context = await browser.newContext();
await openServer(context);
const page = await openEnvironment(context, "nodejs", (n, v, u) => console.log(n, v, u));
page.on("console", (m) => { if (!/frame/.test(m.text())) console.log("PAGE", m.text().slice(0, 600)); });
const d = await deployFolder(page, "todo", fixture("nodejs/express-api"));
console.log("first deploy", d.state, d.agentMs, d.ms);
console.log("first 200", (await firstAnswer(page, "/app/todo/todos")).ms);
const rounds = Number(process.env.ROUNDS ?? 4);
const wait = Number(process.env.WAIT_S ?? 0);
for (let v = 2; v < 2 + rounds; v++) {
  if (wait) await new Promise((ok) => setTimeout(ok, wait * 1000));
  const changed = mkdtempSync(join(tmpdir(), "rd-"));
  cpSync(fixture("nodejs/express-api"), changed, { recursive: true });
  const server = join(changed, "server.js");
  writeFileSync(server, readFileSync(server, "utf8").replace('app: "express-api"', `app: "express-api", v: ${v}`));
  const r = await deployFolder(page, "todo", changed);
  if (r.state !== "done") console.log("DEPLOY", r.state, r.text);
  const nv = await newVersion(page, "/app/todo/", `"v":${v}`);
  console.log(`redeploy v${v}: agent ${r.agentMs} ms, +first new ${nv.ms.toFixed(0)} ms => ${(r.agentMs + nv.ms).toFixed(0)} ms`);
}
await browser.close();
