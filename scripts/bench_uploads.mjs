// Upload and snapshot-image latency in Debian's headless Chromium
// (issue 16). Targets on a quiet machine: attach of a 5 MiB photo →
// workbench_wait returning its image block, p50 ≤ 300 ms; workbench_snapshot
// (image: true) of a 1280×800 page, p50 ≤ 500 ms. Baselines in the same run:
// a typed message → workbench_wait, and a snapshot without an image.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes, createHash } from "node:crypto";
import { chromium } from "../tests/browser/node_modules/playwright-core/index.mjs";
import { Mcp, CHROMIUM, CHROMIUM_ARGS } from "../tests/browser/lib.mjs";
import { encodePng } from "../tests/browser/pngs.mjs";

const N = Number(process.env.N || 15);
setTimeout(() => { console.error("bench_uploads: deadline"); process.exit(3); }, 300_000).unref();
const home = mkdtempSync(join(tmpdir(), "wb-bench-up-"));
// The bench goes faster than a human: lift the per-address rates.
const mcp = new Mcp(home, { WORKBENCH_UPLOADS_RATE: "1000", WORKBENCH_EVENTS_CLIENT_RATE: "1000", WORKBENCH_EVENTS_RATE: "1000" });
const stats = (xs) => { const s = [...xs].sort((a, b) => a - b); const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))]; return { p50: q(0.5), p90: q(0.9), min: s[0], max: s[s.length - 1] }; };
const fmt = (o) => `p50 ${o.p50.toFixed(1)} ms, p90 ${o.p90.toFixed(1)} ms (min ${o.min.toFixed(1)}, max ${o.max.toFixed(1)})`;

async function call(name, args) {
  const r = await mcp.request("tools/call", { name, arguments: args }, 60_000);
  if (!r.result || r.result.isError) throw new Error(`${name}: ${JSON.stringify(r).slice(0, 300)}`);
  return r.result;
}

let browser;
try {
  await mcp.request("initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "bench", version: "1" } });
  const url = (await call("workbench_scaffold", { name: "bu" })).structuredContent.url;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(url);
  await page.waitForSelector("#status.connected");

  // A 5 MiB PNG photo (noise does not compress), staged in the page once.
  const noise = randomBytes(1280 * 1024 * 4);
  const photo = encodePng(1280, 1024, (x, y) => { const i = (y * 1280 + x) * 4; return [noise[i], noise[i + 1], noise[i + 2], 255]; }, 0);
  const photoSha = createHash("sha256").update(photo).digest("hex");
  await page.evaluate((b64) => { window.__photo = new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], "photo.png", { type: "image/png" }); }, photo.toString("base64"));

  let cursor = 0;
  async function roundTrip(trigger, check) {
    const t0 = performance.now();
    const waiting = call("workbench_wait", { project: "bu", since: cursor, timeout_seconds: 30 });
    await page.evaluate(trigger);
    const r = await waiting;
    const ms = performance.now() - t0;
    cursor = r.structuredContent.cursor;
    try { check(r); } catch (e) { throw new Error(`${e.message}; the page says: ${await page.textContent("#wb-toast")}`); }
    return ms;
  }
  const attach = () => { const dt = new DataTransfer(); dt.items.add(window.__photo); const i = document.getElementById("wb-attach-input"); i.files = dt.files; i.dispatchEvent(new Event("change")); };
  const typed = () => { document.getElementById("wb-message").value = "reading 5.02"; document.getElementById("wb-reply").requestSubmit(); };
  const hasImage = (r) => { const img = r.content.find((c) => c.type === "image"); if (!img || createHash("sha256").update(Buffer.from(img.data, "base64")).digest("hex") !== photoSha) throw new Error("no matching image block: " + JSON.stringify(r.structuredContent).slice(0, 300)); };
  const hasEvent = (r) => { if (r.structuredContent.status !== "events") throw new Error("no event"); };

  await roundTrip(attach, hasImage); // warm-up
  await roundTrip(typed, hasEvent);
  const up = [], msg = [], alone = [];
  for (let i = 0; i < N; i++) { msg.push(await roundTrip(typed, hasEvent)); up.push(await roundTrip(attach, hasImage)); }
  // Where the time goes: the upload alone, page → stored, fsynced, 200 (no event, no MCP).
  for (let i = 0; i < N; i++) {
    alone.push(await page.evaluate(async () => {
      const t = performance.now();
      await window.workbench.upload(window.__photo, { event: "" });
      return performance.now() - t;
    }));
  }

  await call("workbench_state", { project: "bu", template: `<h2>Rail checks</h2><table>${Array.from({ length: 30 }, (_, i) => `<tr><td>TP${i}</td><td>${(5 + i / 100).toFixed(2)} V</td><td style="background:hsl(${i * 12},60%,40%)">&nbsp;</td></tr>`).join("")}</table>`, styles: "td{padding:2px 8px;border:1px solid #2a3a2e}" });
  await page.waitForSelector("table");
  const snap = [], snapImg = [];
  await call("workbench_snapshot", { project: "bu", image: true });
  for (let i = 0; i < N; i++) {
    let t0 = performance.now();
    await call("workbench_snapshot", { project: "bu" });
    snap.push(performance.now() - t0);
    t0 = performance.now();
    const r = await call("workbench_snapshot", { project: "bu", image: true });
    snapImg.push(performance.now() - t0);
    const s = r.structuredContent;
    if (!s.image || s.image.width !== 1280 || s.image.height !== 800) throw new Error("no 1280×800 image: " + JSON.stringify(s.image ?? s.image_error));
  }
  const sa = stats(alone);
  const su = stats(up), sm = stats(msg), ss = stats(snap), si = stats(snapImg);
  console.log(`photo ${(photo.length / 1048576).toFixed(2)} MiB, N=${N} each`);
  console.log(`baseline  typed message → workbench_wait:         ${fmt(sm)}`);
  console.log(`attach    5 MiB photo → workbench_wait image:      ${fmt(su)}  (${(su.p50 / sm.p50).toFixed(1)}× baseline p50; target ≤ 300 ms)`);
  console.log(`part      the upload alone (page → fsynced 200):   ${fmt(sa)}`);
  console.log(`baseline  workbench_snapshot (no image):           ${fmt(ss)}`);
  console.log(`snapshot  workbench_snapshot image 1280×800 PNG:   ${fmt(si)}  (${(si.p50 / ss.p50).toFixed(1)}× baseline p50; target ≤ 500 ms)`);
} finally {
  if (browser) await browser.close().catch(() => {});
  try { await call("workbench_stop", { project: "bu" }); } catch { /* stopped */ }
  mcp.close();
  rmSync(home, { recursive: true, force: true });
}
