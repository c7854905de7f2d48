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
import { start } from "./lib.mjs";

const watchdog = setTimeout(() => { console.error("watchdog: apps test took over 120 s"); process.exit(1); }, 120_000);
watchdog.unref();

let env;
before(async () => { env = await start(); });
after(async () => { await env?.close(); });

test("a wait over HTTP gets progress on SSE and returns with a click from Chromium", async () => {
  const made = await env.call("workbench_scaffold", { name: "tab" });
  await env.call("workbench_state", { project: "tab", template: '<button id="b" data-workbench-click="pressed">press</button>' });
  const tab = await env.browser.newPage();
  await tab.goto(made.url);
  await tab.locator("#b").waitFor();
  const progress = [];
  const waiting = env.call("workbench_wait", { project: "tab", timeout_seconds: 40 },
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
  const { host, frame, uri, item, result, errors } = await env.openApp("workbench_scaffold", { name: "inline", title: "Inline" });
  assert.equal(uri, "ui://workbench/app");
  assert.equal(item.mimeType, "text/html;profile=mcp-app");
  const port = result.structuredContent.port;
  assert.ok(item._meta.ui.csp.connectDomains.includes(`ws://127.0.0.1:${port}`));

  // A push reaches the DOM inside the frame.
  await env.call("workbench_state", { project: "inline",
    template: '<p id="v">pushed-1</p><button id="go" data-workbench-click="inline-go">go</button>' });
  await frame.locator("#v").filter({ hasText: "pushed-1" }).waitFor({ timeout: 10_000 });
  assert.equal(await frame.locator("#status-project").textContent(), "inline");
  // A log line, and a form submitted inside the frame.
  await env.call("workbench_log", { project: "inline", message: "log-line-in-frame", level: "success" });
  await frame.locator("#log-entries").filter({ hasText: "log-line-in-frame" }).waitFor({ timeout: 10_000 });
  await env.call("workbench_state", { project: "inline",
    template: '<form data-workbench="reading"><input name="volts" value="3.3"><button id="send">send</button></form>' });
  await frame.locator("#send").click();
  const form = await env.call("workbench_wait", { project: "inline", names: ["reading"], timeout_seconds: 30 });
  assert.equal(form.events[0].data.volts, "3.3", JSON.stringify(form));
  // Exactly once (no second, synthetic submit), even after a pause.
  await new Promise((r) => setTimeout(r, 300));
  const again = await env.call("workbench_events", { project: "inline", since: form.cursor });
  assert.deepEqual(again.events.filter((e) => e.name === "reading"), []);
  await env.call("workbench_state", { project: "inline",
    template: '<p id="v">pushed-2</p><button id="go" data-workbench-click="inline-go">go</button>' });
  await frame.locator("#v").filter({ hasText: "pushed-2" }).waitFor({ timeout: 10_000 });

  // A click inside the frame comes back through workbench_wait.
  const waiting = env.call("workbench_wait", { project: "inline", names: ["inline-go"], timeout_seconds: 30 });
  await frame.locator("#go").click();
  const r = await waiting;
  assert.equal(r.status, "events");
  assert.equal(r.events[0].name, "inline-go");
  // The host saw the app's size and its relayed tool call.
  const seen = await host.evaluate(() => window.hostSeen);
  assert.ok(seen.sizes > 0, "the app reported its size");
  assert.ok(seen.calls.includes("workbench_app_post"), JSON.stringify(seen));
  assert.deepEqual(errors, []);
  await host.close();
});
