// End-to-end: the real `workbench mcp`, real detached project servers on
// 127.0.0.1, and Debian's Chromium driven by playwright-core. Every wait is
// bounded; the whole file has a hard deadline.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync, existsSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { createInterface } from "node:readline";
import { createServer } from "node:http";
import { chromium } from "playwright-core";
import { Mcp, BIN, CHROMIUM, CHROMIUM_ARGS } from "./lib.mjs";

const HARD_DEADLINE_MS = 240_000;

setTimeout(() => { console.error("e2e: hard deadline exceeded"); process.exit(3); }, HARD_DEADLINE_MS).unref();

const home = mkdtempSync(join(tmpdir(), "wb-e2e-"));
const mcp = new Mcp(home);
let browser;

after(async () => {
  if (browser) await browser.close().catch(() => {});
  try { await mcp.call("workbench_stop", { project: "e2e" }); } catch { /* already stopped */ }
  mcp.close();
  rmSync(home, { recursive: true, force: true });
});

async function openPage(url) {
  browser ??= await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  const page = await browser.newPage();
  page.setDefaultTimeout(15_000);
  await page.goto(url);
  await page.waitForSelector("#status.connected");
  return page;
}

const FORM = `
  <h2 id="title">Step 3: measure the 5 V rail</h2>
  <form data-workbench="reading">
    <input name="volts" type="number" step="0.01">
    <input name="note" type="text">
    <label><input name="ok" type="checkbox"> looks right</label>
    <select name="probes" multiple><option value="a">A</option><option value="b">B</option><option value="c">C</option></select>
    <button type="submit" id="submit">record</button>
  </form>
  <button data-workbench-click="step3-done" data-step="3" id="done">Step 3 done</button>`;

test("the human answers through the page and workbench_wait returns every answer", async () => {
  await mcp.request("initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "e2e", version: "1" } });
  const s = await mcp.call("workbench_scaffold", { name: "e2e", title: "E2E bench" });
  assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const page = await openPage(s.url);
  assert.equal(await page.textContent("h1"), "E2E bench");

  await mcp.call("workbench_state", { project: "e2e", template: FORM, styles: "#title{color:rgb(1, 2, 3)}" });
  await page.waitForSelector("#title");
  assert.equal(await page.$eval("#title", (e) => getComputedStyle(e).color), "rgb(1, 2, 3)");

  // A data push reaches handlers registered by the AI's script, without a re-render.
  await mcp.call("workbench_state", { project: "e2e", script: "workbench.on('data', d => { window.__got = (window.__got||[]).concat([d.v]); });" });
  for (const v of [1, 2, 3]) await mcp.call("workbench_state", { project: "e2e", data: { v } });
  await page.waitForFunction(() => (window.__got || []).length === 3);
  assert.deepEqual(await page.evaluate(() => window.__got), [1, 2, 3]);
  assert.equal(await page.$eval("#title", (e) => e.isConnected), true);

  // Log text is rendered as text, never as HTML.
  const evil = `<img src=x onerror="window.__pwned=1"><b>bold</b>`;
  await mcp.call("workbench_log", { project: "e2e", message: evil, level: "warn" });
  await page.waitForFunction((t) => [...document.querySelectorAll(".log-msg")].some((e) => e.textContent === t), evil);
  assert.equal(await page.$$eval("#log-entries b, #log-entries img", (els) => els.length), 0);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);

  // Fill and submit the form, click the button, type a message.
  await page.fill("input[name=volts]", "5.02");
  await page.fill("input[name=note]", "ripple ok");
  await page.check("input[name=ok]");
  await page.selectOption("select[name=probes]", ["a", "c"]);
  await page.click("#submit");
  await page.waitForSelector("#wb-toast.ok");
  assert.equal(page.url(), s.url, "the form did not navigate");
  await page.click("#done");
  await page.fill("#wb-message", "the fan is loud");
  await page.press("#wb-message", "Enter");
  await page.waitForFunction(() => document.getElementById("wb-message").value === "");

  let cursor = 0;
  const events = [];
  for (let i = 0; i < 10 && events.length < 3; i++) {
    const r = await mcp.call("workbench_wait", { project: "e2e", since: cursor, timeout_seconds: 5 });
    events.push(...r.events);
    cursor = r.cursor;
  }
  assert.deepEqual(events.map((e) => e.name), ["reading", "step3-done", "message"]);
  assert.deepEqual(events[0].data, { volts: 5.02, note: "ripple ok", ok: true, probes: ["a", "c"] });
  assert.equal(events[1].data.step, "3");
  assert.equal(events[1].data.label, "Step 3 done");
  assert.deepEqual(events[2].data, { text: "the fan is loud" });
  assert.ok(events.every((e, i) => e.seq === i + 1 && e.from.viewer.startsWith("v")));
  // Nothing more is pending: the next wait times out with the same cursor.
  const idle = await mcp.call("workbench_wait", { project: "e2e", since: cursor, timeout_seconds: 1 });
  assert.equal(idle.status, "pending");
  assert.equal(idle.cursor, cursor);

  // The events are in the session log too.
  const log = await mcp.call("workbench_read_log", { project: "e2e", limit: 10 });
  assert.ok(log.entries.some((e) => e.source === "page" && e.message.includes("step3-done")));

  // The AI sees what the human sees.
  const snap = await mcp.call("workbench_snapshot", { project: "e2e" });
  assert.equal(snap.connected, true);
  assert.match(snap.text, /Step 3: measure the 5 V rail/);
  assert.deepEqual(snap.forms[0].fields, { volts: 5.02, note: "ripple ok", ok: true, probes: ["a", "c"] });
  await page.close();
});

test("an unreachable server keeps what the human typed and says so", async () => {
  const s = await mcp.call("workbench_scaffold", { name: "e2e" });
  const page = await openPage(s.url);
  const info = JSON.parse(readFileSync(join(home, "e2e", ".server.json"), "utf8"));
  process.kill(info.pid, "SIGKILL");
  await page.waitForSelector("#status.disconnected");
  assert.match(await page.textContent("#status-text"), /reconnecting/);
  await page.fill("#wb-message", "typed while offline");
  await page.press("#wb-message", "Enter");
  await page.waitForSelector("#wb-toast.err");
  assert.match(await page.textContent("#wb-toast"), /not sent/);
  assert.equal(await page.inputValue("#wb-message"), "typed while offline");

  // Any tool restarts the server on the same port; the page comes back by itself.
  await mcp.call("workbench_log", { project: "e2e", message: "server restarted" });
  const info2 = JSON.parse(readFileSync(join(home, "e2e", ".server.json"), "utf8"));
  assert.equal(info2.port, info.port);
  assert.notEqual(info2.pid, info.pid);
  await page.waitForSelector("#status.connected", { timeout: 20_000 });
  await page.waitForSelector("#title");
  assert.equal(await page.textContent("#title"), "Step 3: measure the 5 V rail");
  await page.waitForFunction(() => [...document.querySelectorAll(".log-msg")].some((e) => e.textContent === "server restarted"));
  await page.press("#wb-message", "Enter");
  await page.waitForSelector("#wb-toast.ok");
  const r = await mcp.call("workbench_events", { project: "e2e", since: 3 });
  assert.deepEqual(r.events.map((e) => e.data), [{ text: "typed while offline" }]);
  await page.close();
});

test("a page reload and a second device get the same state", async () => {
  const s = await mcp.call("workbench_scaffold", { name: "e2e" });
  await mcp.call("workbench_state", { project: "e2e", template: "<p id='shared'>same everywhere</p>", script: null });
  const a = await openPage(s.url);
  const b = await openPage(s.url);
  await a.waitForSelector("#shared");
  await b.waitForSelector("#shared");
  await a.reload();
  await a.waitForSelector("#status.connected");
  assert.equal(await a.textContent("#shared"), "same everywhere");
  // Tabs closed by earlier tests said goodbye (pings are 60 s apart here).
  const deadline = Date.now() + 15_000;
  while ((await (await fetch(new URL("/health", s.url))).json()).viewers !== 2) {
    assert.ok(Date.now() < deadline, "closed viewers were never noticed");
    await new Promise((r) => setTimeout(r, 100));
  }
  const push = await mcp.call("workbench_state", { project: "e2e", template: "<p id='shared'>updated</p>" });
  assert.equal(push.viewers, 2);
  for (const p of [a, b]) await p.waitForFunction(() => document.getElementById("shared")?.textContent === "updated");
  await a.close();
  await b.close();
  // Closing the tabs sends their goodbye beacons: the count drops without a ping.
  const gone = Date.now() + 10_000;
  while ((await (await fetch(new URL("/health", s.url))).json()).viewers !== 0) {
    assert.ok(Date.now() < gone, "closed tabs still counted");
    await new Promise((r) => setTimeout(r, 100));
  }
});

// A page from another origin (another port on 127.0.0.1, and the same port
// on 127.0.0.2) tries everything a cross-site page can: read the live state
// over /ws, post events and snapshot answers the way the real page does,
// and the CORS-free ways (text/plain, sendBeacon). It gets nothing.
const EVIL = (target) => `<!doctype html><script>
  const T = ${JSON.stringify(target)};
  window.__results = {};
  const ws = new WebSocket(T.replace("http", "ws") + "ws");
  ws.onmessage = (e) => { window.__results.wsData = (window.__results.wsData || "") + e.data; };
  ws.onopen = () => { window.__results.wsOpen = true; };
  ws.onclose = ws.onerror = () => { window.__results.wsDone = true; };
  const post = (path, type, extra) => fetch(T + path, { method: "POST", mode: "no-cors",
      headers: { "Content-Type": type, ...(extra || {}) }, body: JSON.stringify({ name: "evil", data: "FORGED", viewer: "v1", key: "x" }) })
    .then(() => "sent", (e) => "blocked: " + e.message);
  Promise.all([
    post("api/event", "text/plain"),
    fetch(T + "api/event", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: "evil" }) })
      .then(() => "sent", (e) => "blocked: " + e.message),
    post("api/snapshot/0123456789abcdef01234567", "text/plain"),
    Promise.resolve(navigator.sendBeacon(T + "api/event", JSON.stringify({ name: "evil" }))),
  ]).then((r) => { window.__results.posts = r; });
</script>`;

test("a page from another origin can neither read the page nor post to it", async () => {
  const s = await mcp.call("workbench_scaffold", { name: "e2e" });
  const target = s.url;
  const port = Number(new URL(target).port);
  await mcp.call("workbench_state", { project: "e2e", template: "<p id='secret'>only for this page</p>" });
  const before = await mcp.call("workbench_events", { project: "e2e", since: 0, limit: 1000 });
  const real = await openPage(target);
  const evilServer = (host, p) => new Promise((res, rej) => {
    const srv = createServer((req, resp) => { resp.writeHead(200, { "Content-Type": "text/html" }); resp.end(EVIL(target)); });
    srv.once("error", rej);
    srv.listen(p, host, () => res(srv));
  });
  const servers = [await evilServer("127.0.0.1", 0), await evilServer("127.0.0.2", port)];
  try {
    for (const srv of servers) {
      const a = srv.address();
      const evil = await browser.newPage();
      evil.setDefaultTimeout(15_000);
      await evil.goto(`http://${a.address}:${a.port}/`);
      await evil.waitForFunction(() => (window.__results.wsDone || window.__results.wsOpen) && window.__results.posts);
      const r = await evil.evaluate(() => window.__results);
      assert.equal(r.wsOpen, undefined, `the WebSocket opened from ${a.address}:${a.port}`);
      assert.equal(r.wsData, undefined, "the page's state leaked cross-origin");
      await evil.close();
    }
    // Nothing the evil pages sent was taken, and the snapshot is the real page's.
    const after = await mcp.call("workbench_events", { project: "e2e", since: before.cursor, limit: 1000 });
    assert.deepEqual(after.events.map((e) => e.name), [], "a cross-origin post was stored");
    const snap = await mcp.call("workbench_snapshot", { project: "e2e" });
    assert.match(snap.text, /only for this page/);
    assert.doesNotMatch(JSON.stringify(snap), /FORGED/);
    // The real page still answers.
    await real.fill("#wb-message", "still here");
    await real.press("#wb-message", "Enter");
    await real.waitForSelector("#wb-toast.ok");
    const mine = await mcp.call("workbench_events", { project: "e2e", since: before.cursor });
    assert.deepEqual(mine.events.map((e) => e.data), [{ text: "still here" }]);
  } finally {
    for (const srv of servers) srv.close();
    await real.close();
  }
});

test("the demo renders and answers the human", async () => {
  const demoHome = mkdtempSync(join(tmpdir(), "wb-demo-"));
  const demo = spawn(BIN, ["demo", "--host", "127.0.0.1", "--port", "0", "--seconds", "60"], {
    env: { HOME: demoHome, PATH: "/usr/bin:/bin", WORKBENCH_HOME: demoHome },
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const url = await new Promise((res, rej) => {
      const t = setTimeout(() => rej(new Error("demo printed no URL")), 15_000);
      createInterface({ input: demo.stdout }).once("line", (l) => { clearTimeout(t); res(l.match(/http:\S+/)[0]); });
    });
    const page = await openPage(url);
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.waitForFunction(() => /^\d\.\d{3}$/.test(document.getElementById("volts")?.textContent || ""));
    await page.click("button[data-workbench-click='step-done'][data-step='1']");
    await page.waitForSelector(".steps li.done[data-step='1']");
    await page.fill("input[name=volts]", "5.013");
    await page.fill("input[name=note]", "steady");
    await page.check("input[name=ripple_ok]");
    await page.click("form[data-workbench=reading] button[type=submit]");
    await page.waitForFunction(() => [...document.querySelectorAll(".log-msg")].some((e) => e.textContent.startsWith("Recorded TP3 = 5.013 V")));
    await page.waitForFunction(() => document.getElementById("answers").textContent.includes("5.013"));
    // For the README screenshot, let the live chart fill up first.
    if (process.env.WORKBENCH_SCREENSHOT) {
      await page.waitForFunction(() => document.getElementById("trace").getAttribute("points").split(" ").length >= 110, null, { timeout: 30_000 });
    }
    const shot = process.env.WORKBENCH_SCREENSHOT || join(demoHome, "demo.png");
    mkdirSync(dirname(shot), { recursive: true });
    await page.screenshot({ path: shot });
    assert.ok(existsSync(shot));
    await page.close();
    const exited = new Promise((res) => demo.once("exit", (code) => res(code)));
    demo.kill("SIGINT");
    assert.equal(await exited, 0, "Ctrl-C stops the demo cleanly");
    assert.equal(existsSync(join(demoHome, "demo", ".server.json")), false, "its server is stopped too");
  } finally {
    demo.kill("SIGKILL");
    rmSync(demoHome, { recursive: true, force: true });
  }
});
