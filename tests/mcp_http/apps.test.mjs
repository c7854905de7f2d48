// `workbench mcp --http` in Chromium, with the official SDKs on both ends:
// * a plain tab: a blocking workbench_wait over HTTP (official TypeScript
//   client) gets progress on SSE and returns with a click made in Chromium;
// * MCP Apps: a host page built on @modelcontextprotocol/ext-apps' AppBridge
//   loads the tool's ui:// resource into a sandboxed frame as a real host
//   does (tool input, resources/read and tools/call relayed through the host),
//   a workbench_state push appears inside the frame, and a click inside it
//   comes back through workbench_wait.
// Everything talks to 127.0.0.1 only. Run by tests/mcp_http/run.sh.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, rmSync, readdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const BIN = process.env.WORKBENCH_BIN || join(root, "target/debug/workbench");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"];
const watchdog = setTimeout(() => { console.error("watchdog: apps test took over 120 s"); process.exit(1); }, 120_000);
watchdog.unref();

let home, server, url, token, browser, client, hostServer, hostUrl;
const env = () => ({ ...process.env, WORKBENCH_HOME: home, HOME: home, WORKBENCH_HOST: "127.0.0.1", WORKBENCH_SERVE_HOST: "127.0.0.1" });

before(async () => {
  home = mkdtempSync(join(tmpdir(), "wb-apps-"));
  server = spawn(BIN, ["mcp", "--http", "--port", "0"], { env: env(), stdio: ["ignore", "pipe", "inherit"] });
  const line = await new Promise((ok) => createInterface({ input: server.stdout }).once("line", ok));
  url = line.split(" at ")[1].trim();
  token = execFileSync(BIN, ["mcp", "--http", "--show-token"], { env: env() }).toString().trim();
  client = new Client({ name: "apps-test-host", version: "1" }, {
    capabilities: { extensions: { "io.modelcontextprotocol/ui": { mimeTypes: ["text/html;profile=mcp-app"] } } },
  });
  await client.connect(new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  }));
  // The host page and the ext-apps host bundle, served from loopback.
  execFileSync(process.execPath, [join(here, "node_modules/.bin/rolldown"), join(here, "host-entry.mjs"),
    "--format", "iife", "--name", "ExtApps", "--platform", "browser", "--file", join(home, "host-bundle.js")],
  { stdio: "ignore" });
  const bundle = readFileSync(join(home, "host-bundle.js"));
  const page = readFileSync(join(here, "host.html"));
  hostServer = createServer((req, res) => {
    if (req.url === "/host-bundle.js") { res.writeHead(200, { "Content-Type": "text/javascript" }); res.end(bundle); }
    else { res.writeHead(200, { "Content-Type": "text/html" }); res.end(page); }
  });
  await new Promise((ok) => hostServer.listen(0, "127.0.0.1", ok));
  hostUrl = `http://127.0.0.1:${hostServer.address().port}/`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
});

after(async () => {
  await client?.close().catch(() => {});
  await browser?.close();
  hostServer?.close();
  for (const d of existsSync(home) ? readdirSync(home) : []) {
    try { process.kill(JSON.parse(readFileSync(join(home, d, ".server.json"))).pid); } catch { /* none */ }
  }
  server?.kill();
  // The page servers may still be finishing their last writes.
  rmSync(home, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
});

const call = async (name, args, opts) => {
  const r = await client.callTool({ name, arguments: args }, opts);
  assert.equal(r.isError, false, JSON.stringify(r));
  return r.structuredContent;
};

test("a wait over HTTP gets progress on SSE and returns with a click from Chromium", async () => {
  const made = await call("workbench_scaffold", { name: "tab" });
  await call("workbench_state", { project: "tab", template: '<button id="b" data-workbench-click="pressed">press</button>' });
  const tab = await browser.newPage();
  await tab.goto(made.url);
  await tab.locator("#b").waitFor();
  const progress = [];
  const waiting = call("workbench_wait", { project: "tab", timeout_seconds: 40 },
    { onprogress: (p) => progress.push(p), timeout: 60_000 });
  // Click once the first progress notification arrived (5 s slices).
  const t0 = Date.now();
  while (progress.length === 0 && Date.now() - t0 < 15_000) await new Promise((r) => setTimeout(r, 100));
  assert.ok(progress.length > 0, "progress arrived on the SSE stream before the answer");
  await tab.locator("#b").click();
  const r = await waiting;
  assert.equal(r.status, "events");
  assert.equal(r.events[0].name, "pressed");
  await tab.close();
});

test("MCP Apps: the page inline in an ext-apps host frame gets pushes and sends clicks back", async () => {
  const tools = (await client.listTools()).tools;
  const scaffoldTool = tools.find((t) => t.name === "workbench_scaffold");
  const uri = scaffoldTool._meta.ui.resourceUri;
  assert.equal(uri, "ui://workbench/app");
  // As a host does: call the tool, then read and show its UI resource.
  const args = { name: "inline", title: "Inline" };
  const result = await client.callTool({ name: "workbench_scaffold", arguments: args });
  const res = await client.readResource({ uri });
  const item = res.contents[0];
  assert.equal(item.mimeType, "text/html;profile=mcp-app");
  const csp = item._meta.ui.csp.connectDomains;
  const port = result.structuredContent.port;
  assert.ok(csp.includes(`ws://127.0.0.1:${port}`), JSON.stringify(csp));

  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.exposeFunction("hostCallTool", (p) => client.callTool(p));
  await page.exposeFunction("hostReadResource", (p) => client.readResource(p));
  await page.goto(hostUrl);
  await page.evaluate(({ html, csp, args, result }) => window.showApp(html, csp, args, result),
    { html: item.text, csp, args, result });
  await page.waitForFunction(() => window.appInitialized === true, null, { timeout: 15_000 });
  const frame = page.frameLocator("#app");
  await frame.locator("#status").filter({ hasText: "Connected" }).waitFor({ timeout: 15_000 });

  // A push reaches the DOM inside the frame.
  const sent = Date.now();
  await call("workbench_state", { project: "inline",
    template: '<p id="v">pushed-1</p><button id="go" data-workbench-click="inline-go">go</button>' });
  await frame.locator("#v").filter({ hasText: "pushed-1" }).waitFor({ timeout: 10_000 });
  console.log(`push to DOM through the app frame: ${Date.now() - sent} ms`);

  // A click inside the frame comes back through workbench_wait.
  const waiting = call("workbench_wait", { project: "inline", names: ["inline-go"], timeout_seconds: 30 });
  await frame.locator("#go").click();
  const r = await waiting;
  assert.equal(r.status, "events");
  assert.equal(r.events[0].name, "inline-go");
  // The host saw the app's size and its relayed tool call.
  const seen = await page.evaluate(() => window.hostSeen);
  assert.ok(seen.sizes > 0, "the app reported its size");
  assert.ok(seen.calls.includes("workbench_app_post"), JSON.stringify(seen));
  assert.deepEqual(errors, []);
  await page.close();
});
