// Browser-path speed (not a test): from `workbench_state` written to the MCP
// pipe to the pushed text in Chromium's DOM, and from a click in the page to
// `workbench_wait` returning. Each against a baseline in the same run: the
// same push as a direct HTTP POST, and the same click read by a direct HTTP
// long-poll. Times are performance.timeOrigin + now() on both sides (same
// machine). Loopback only; run by scripts/bench_browser.sh.
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "../tests/browser/node_modules/playwright-core/index.mjs";
import { Mcp, CHROMIUM, CHROMIUM_ARGS } from "../tests/browser/lib.mjs";

const N = Number(process.env.N || 200);
const now = () => performance.timeOrigin + performance.now();
const pct = (a, p) => { const s = [...a].sort((x, y) => x - y); return s[Math.round((s.length - 1) * p)]; };
const fmt = (a) => `p50 ${pct(a, 0.5).toFixed(2)} ms, p95 ${pct(a, 0.95).toFixed(2)} ms`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const home = mkdtempSync(join(tmpdir(), "wb-bench-browser-"));
const mcp = new Mcp(home, { WORKBENCH_PING_SECS: "10" });
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
setTimeout(() => { console.error("bench: deadline"); process.exit(3); }, 300_000).unref();
try {
  await mcp.request("initialize", { protocolVersion: "2025-06-18" });
  const s = await mcp.call("workbench_scaffold", { name: "bench" });
  const info = JSON.parse(readFileSync(join(home, "bench", ".server.json"), "utf8"));
  const api = (path, init = {}) => fetch(new URL(path, s.url), { ...init, headers: { Authorization: `Bearer ${info.token}`, "Content-Type": "application/json" } });
  const page = await browser.newPage();
  await page.goto(s.url);
  await page.waitForSelector("#status.connected");
  await page.evaluate(() => {
    window.__seen = {};
    new MutationObserver(() => {
      const el = document.getElementById("n");
      if (el && !(el.textContent in window.__seen)) window.__seen[el.textContent] = performance.timeOrigin + performance.now();
    }).observe(document.getElementById("content"), { childList: true, subtree: true, characterData: true });
  });

  async function pushes(label, send) {
    const sent = {};
    for (let i = 0; i < N; i++) {
      const key = `${label}-${i}`;
      sent[key] = now();
      await send(`<p id="n">${key}</p>`);
      await sleep(5);
    }
    await page.waitForFunction((k) => k in window.__seen, `${label}-${N - 1}`);
    const seen = await page.evaluate(() => window.__seen);
    return Object.keys(sent).map((k) => seen[k] - sent[k]);
  }
  const direct = await pushes("http", (t) => api("/api/state", { method: "POST", body: JSON.stringify({ template: t }) }));
  const viaMcp = await pushes("mcp", (t) => mcp.call("workbench_state", { project: "bench", template: t }));
  console.log(`baseline: direct POST /api/state → text in Chromium's DOM (${N}): ${fmt(direct)}`);
  console.log(`workbench_state on the MCP pipe → text in Chromium's DOM (${N}): ${fmt(viaMcp)}; p50 ratio ${(pct(viaMcp, 0.5) / pct(direct, 0.5)).toFixed(2)}x`);

  await mcp.call("workbench_state", { project: "bench", template: `<button id="b" data-workbench-click="tap">tap</button>` });
  await page.waitForSelector("#b");
  await page.evaluate(() => {
    window.__clicks = [];
    document.addEventListener("click", () => window.__clicks.push(performance.timeOrigin + performance.now()), true);
  });
  let cursor = (await mcp.call("workbench_events", { project: "bench", since: 0 })).cursor;
  async function clicks(label, wait) {
    const lat = [];
    for (let i = 0; i < 50; i++) {
      const waiting = wait(cursor).then((r) => ({ r, at: now() }));
      await sleep(20); // the wait is parked on the server before the click
      await page.evaluate(() => document.getElementById("b").click());
      const { r, at } = await waiting;
      cursor = r.cursor;
      const clicked = await page.evaluate(() => window.__clicks[window.__clicks.length - 1]);
      lat.push(at - clicked);
      await sleep(250); // stay under the page's per-address event rate limit
    }
    return lat;
  }
  const pollDirect = await clicks("http", async (c) => (await api(`/api/events?since=${c}&wait=10`)).json());
  const waitMcp = await clicks("mcp", (c) => mcp.call("workbench_wait", { project: "bench", since: c, timeout_seconds: 10 }));
  console.log(`baseline: click → direct GET /api/events long-poll returns (50): ${fmt(pollDirect)}`);
  console.log(`click → workbench_wait returns on the MCP pipe (50): ${fmt(waitMcp)}; p50 ratio ${(pct(waitMcp, 0.5) / pct(pollDirect, 0.5)).toFixed(2)}x`);
  await mcp.call("workbench_stop", { project: "bench" });
} finally {
  await browser.close();
  mcp.close();
  rmSync(home, { recursive: true, force: true });
}
