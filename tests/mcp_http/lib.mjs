// Shared by apps.test.mjs and bench_apps.mjs: a `workbench mcp --http` on a
// loopback port in a temporary home, the official TypeScript MCP client on
// it, Chromium, and the MCP Apps test host (host.html + the ext-apps bundle).
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, rmSync, readdirSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
export const BIN = process.env.WORKBENCH_BIN || join(root, "target/debug/workbench");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"];

export async function start() {
  const home = mkdtempSync(join(tmpdir(), "wb-apps-"));
  const env = { ...process.env, WORKBENCH_HOME: home, HOME: home, WORKBENCH_HOST: "127.0.0.1", WORKBENCH_SERVE_HOST: "127.0.0.1" };
  const server = spawn(BIN, ["mcp", "--http", "--port", "0"], { env, stdio: ["ignore", "pipe", "ignore"] });
  const line = await new Promise((ok) => createInterface({ input: server.stdout }).once("line", ok));
  const url = line.split(" at ")[1].trim();
  const token = execFileSync(BIN, ["mcp", "--http", "--show-token"], { env }).toString().trim();
  const client = new Client({ name: "apps-test-host", version: "1" }, {
    capabilities: { extensions: { "io.modelcontextprotocol/ui": { mimeTypes: ["text/html;profile=mcp-app"] } } },
  });
  await client.connect(new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  }));
  execFileSync(process.execPath, [join(here, "node_modules/.bin/rolldown"), join(here, "host-entry.mjs"),
    "--format", "iife", "--name", "ExtApps", "--platform", "browser", "--file", join(home, "host-bundle.js")],
  { stdio: "ignore" });
  const bundle = readFileSync(join(home, "host-bundle.js"));
  const page = readFileSync(join(here, "host.html"));
  const hostServer = createServer((req, res) => {
    if (req.url === "/host-bundle.js") { res.writeHead(200, { "Content-Type": "text/javascript" }); res.end(bundle); }
    else { res.writeHead(200, { "Content-Type": "text/html" }); res.end(page); }
  });
  await new Promise((ok) => hostServer.listen(0, "127.0.0.1", ok));
  const hostUrl = `http://127.0.0.1:${hostServer.address().port}/`;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });

  const call = async (name, args, opts) => {
    const r = await client.callTool({ name, arguments: args }, opts);
    assert.equal(r.isError, false, JSON.stringify(r));
    return r.structuredContent;
  };

  /** Shows the tool's UI resource in the test host, as a host does after a call. */
  async function openApp(toolName, args) {
    const tool = (await client.listTools()).tools.find((t) => t.name === toolName);
    const uri = tool._meta.ui.resourceUri;
    const result = await client.callTool({ name: toolName, arguments: args });
    const item = (await client.readResource({ uri })).contents[0];
    const host = await browser.newPage();
    const errors = [];
    host.on("pageerror", (e) => errors.push(String(e)));
    await host.exposeFunction("hostCallTool", (p) => client.callTool(p));
    await host.exposeFunction("hostReadResource", (p) => client.readResource(p));
    await host.goto(hostUrl);
    const csp = item._meta.ui.csp.connectDomains;
    await host.evaluate(({ html, csp, args, result }) => window.showApp(html, csp, args, result),
      { html: item.text, csp, args, result });
    await host.waitForFunction(() => window.appInitialized === true, null, { timeout: 15_000 });
    const frame = host.frameLocator("#app");
    await frame.locator("#status").filter({ hasText: "Connected" }).waitFor({ timeout: 15_000 });
    return { host, frame, uri, item, result, errors };
  }

  async function close() {
    await client.close().catch(() => {});
    await browser.close();
    hostServer.close();
    const pids = [];
    for (const d of existsSync(home) ? readdirSync(home) : []) {
      try { pids.push(JSON.parse(readFileSync(join(home, d, ".server.json"))).pid); } catch { /* none */ }
    }
    for (const pid of pids) { try { process.kill(pid); } catch { /* gone */ } }
    server.kill();
    const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };
    for (let i = 0; i < 60 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 50));
    // The page servers may still be finishing their last writes.
    rmSync(home, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  }

  return { client, browser, call, openApp, close };
}
