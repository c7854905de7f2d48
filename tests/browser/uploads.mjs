// Attachments end to end (issue 16, docs/files.md): the real `workbench mcp`,
// real project servers on 127.0.0.1, Debian's Chromium via playwright-core.
// Every way in (attach control, drop, paste, a form's file field) must come
// back from workbench_wait as an image block with the file's sha256;
// refusals are shown in the page; an uploaded SVG cannot reach the page;
// an AI-written image loads; a snapshot image has known pixels.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { Mcp, CHROMIUM, CHROMIUM_ARGS } from "./lib.mjs";
import { encodePng, decodePng } from "./pngs.mjs";

const HARD_DEADLINE_MS = 180_000;
setTimeout(() => { console.error("uploads: hard deadline exceeded"); process.exit(3); }, HARD_DEADLINE_MS).unref();

const homeA = mkdtempSync(join(tmpdir(), "wb-up-a-"));
const homeB = mkdtempSync(join(tmpdir(), "wb-up-b-"));
const mcp = new Mcp(homeA, { WORKBENCH_UPLOAD_MAX_BYTES: String(1 << 20) });
const mcpB = new Mcp(homeB, { WORKBENCH_UPLOADS_MAX_FILES: "1" });
let browser;

after(async () => {
  if (browser) await browser.close().catch(() => {});
  for (const [m, p] of [[mcp, "up"], [mcpB, "full"]]) {
    try { await m.call("workbench_stop", { project: p }); } catch { /* already stopped */ }
    m.close();
  }
  rmSync(homeA, { recursive: true, force: true });
  rmSync(homeB, { recursive: true, force: true });
});

const sha = (b) => createHash("sha256").update(b).digest("hex");
const png = (w, h, rgb) => encodePng(w, h, (x, y) => [rgb[0], rgb[1], (x * 7 + y * 3) & 0xff, 255]);

async function openPage(url) {
  browser ??= await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(15_000);
  await page.goto(url);
  await page.waitForSelector("#status.connected");
  return page;
}

async function call(m, name, args) {
  const r = await m.request("tools/call", { name, arguments: args });
  assert.ok(r.result, JSON.stringify(r));
  assert.equal(r.result.isError, false, r.result.content?.[0]?.text);
  return r.result;
}

let cursor = 0;
/** The next events (optionally only `names`) and the image blocks beside them. */
async function next(names) {
  const r = await call(mcp, "workbench_wait", { project: "up", since: cursor, timeout_seconds: 20, ...(names ? { names } : {}) });
  const s = r.structuredContent;
  assert.equal(s.status, "events", JSON.stringify(s));
  cursor = s.cursor;
  return { events: s.events, images: r.content.filter((c) => c.type === "image") };
}

function assertImageOf(got, bytes) {
  assert.equal(got.images.length, 1, JSON.stringify(got.events));
  assert.equal(sha(Buffer.from(got.images[0].data, "base64")), sha(bytes));
  assert.equal(got.images[0].mimeType, "image/png");
}

let page, url;

test("the attach control, a drop and a paste each reach workbench_wait as an image", async () => {
  await mcp.request("initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "up", version: "1" } });
  url = (await call(mcp, "workbench_scaffold", { name: "up", title: "Uploads" })).structuredContent.url;
  page = await openPage(url);

  const a = png(64, 48, [200, 10, 10]);
  await page.setInputFiles("#wb-attach-input", { name: "scope.png", mimeType: "image/png", buffer: a });
  let got = await next();
  assert.equal(got.events[0].name, "attachment");
  const f = got.events[0].data.files[0];
  assert.equal(got.events[0].data.via, "attach");
  assert.deepEqual([f.name, f.size, f.mime, f.sha256, f.returned_as], ["scope.png", a.length, "image/png", sha(a), "image"]);
  assert.match(f.path, /^files\/uploads\/.+-scope\.png$/);
  assertImageOf(got, a);
  await page.waitForFunction(() => document.getElementById("wb-toast").textContent.includes("attached"));

  const d = png(32, 32, [10, 200, 10]);
  await page.evaluate((b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
    document.getElementById("content").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, d.toString("base64"));
  got = await next();
  assert.equal(got.events[0].data.via, "drop");
  assertImageOf(got, d);

  const p = png(20, 10, [10, 10, 200]);
  await page.evaluate((b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], "image.png", { type: "image/png" }));
    document.getElementById("wb-message").dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
  }, p.toString("base64"));
  got = await next();
  assert.equal(got.events[0].data.via, "paste");
  assertImageOf(got, p);
});

test("a file field in a form is uploaded and sent with the form", async () => {
  await call(mcp, "workbench_state", { project: "up", template: `
    <form data-workbench="report"><input type="file" name="photo"><input name="note"><button id="rsend">send</button></form>` });
  await page.waitForSelector("#rsend");
  const b = png(50, 50, [90, 90, 0]);
  await page.setInputFiles("input[name=photo]", { name: "board.png", mimeType: "image/png", buffer: b });
  await page.fill("input[name=note]", "scorched R12");
  await page.click("#rsend");
  const got = await next(["report"]);
  assert.equal(got.events[0].data.note, "scorched R12");
  assert.equal(got.events[0].data.photo[0].sha256, sha(b));
  assertImageOf(got, b);
});

test("refusals are shown in the page: too big, a lying type, a full quota", async () => {
  const big = Buffer.concat([png(8, 8, [1, 2, 3]), Buffer.alloc(1_200_000, 7)]);
  await page.setInputFiles("#wb-attach-input", { name: "huge.png", mimeType: "image/png", buffer: big });
  await page.waitForFunction(() => /not attached: huge\.png: the file is \d+ bytes; the limit is 1048576 bytes/.test(document.getElementById("wb-toast").textContent));

  const lie = Buffer.from("<!doctype html><script>parent.__pwned = 1</script>");
  await page.setInputFiles("#wb-attach-input", { name: "cat.png", mimeType: "image/png", buffer: lie });
  await page.waitForFunction(() => document.getElementById("wb-toast").textContent.includes("claims to be image/png but its content is text/html"));

  await mcpB.request("initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "upb", version: "1" } });
  const urlB = (await call(mcpB, "workbench_scaffold", { name: "full" })).structuredContent.url;
  const pb = await openPage(urlB);
  await pb.setInputFiles("#wb-attach-input", { name: "one.png", mimeType: "image/png", buffer: png(4, 4, [1, 1, 1]) });
  await pb.waitForFunction(() => document.getElementById("wb-toast").textContent.includes("attached"));
  await pb.setInputFiles("#wb-attach-input", { name: "two.png", mimeType: "image/png", buffer: png(4, 4, [2, 2, 2]) });
  await pb.waitForFunction(() => document.getElementById("wb-toast").textContent.includes("already holds 1 uploaded files"));
  await pb.close();
});

test("an uploaded SVG with a script, opened from the page, cannot reach the page", async () => {
  const svg = Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">
    <script>document.documentElement.setAttribute("data-ran", "1");
      try { opener.document.title = "pwned"; opener.__stolen = String(opener.__workbench_state) + document.cookie; } catch (e) {}</script>
    <rect width="10" height="10" fill="red"/></svg>`);
  await page.evaluate(() => { document.cookie = "wbsecret=42"; window.__workbench_state = "secret-state"; });
  await page.setInputFiles("#wb-attach-input", { name: "evil.svg", mimeType: "image/svg+xml", buffer: svg });
  const got = await next();
  const f = got.events[0].data.files[0];
  assert.equal(f.mime, "image/svg+xml");
  assert.equal(got.images.length, 0, "SVG is a reference, never an image block");
  const headers = await page.evaluate(async (u) => { const r = await fetch(u); return [r.headers.get("content-security-policy"), r.headers.get("x-content-type-options")]; }, f.url);
  assert.deepEqual(headers, ["sandbox", "nosniff"]);
  const [popup] = await Promise.all([page.waitForEvent("popup"), page.evaluate((u) => { window.open(u); }, f.url)]);
  await popup.waitForLoadState("load");
  assert.equal(await popup.evaluate(() => document.documentElement.getAttribute("data-ran")), null, "the SVG's script never ran");
  // Even code that does run there (injected by the test) is in another origin.
  const reach = await popup.evaluate(() => { try { return String(opener.__workbench_state); } catch (e) { return "blocked " + e.name; } });
  assert.match(reach, /^blocked SecurityError/);
  const cookie = await popup.evaluate(() => { try { return document.cookie; } catch (e) { return "blocked " + e.name; } });
  assert.ok(!cookie.includes("wbsecret"), cookie);
  assert.equal(await page.title(), "Uploads");
  assert.equal(await page.evaluate(() => window.__stolen), undefined);
  await popup.close();
});

test("workbench_write_file then a template shows the image", async () => {
  const img = png(40, 30, [0, 255, 0]);
  let w = (await call(mcp, "workbench_write_file", { project: "up", path: "scope-annotated.png", base64: img.toString("base64") })).structuredContent;
  assert.deepEqual([w.url, w.replaced], ["/files/scope-annotated.png", false]);
  w = (await call(mcp, "workbench_write_file", { project: "up", path: "scope-annotated.png", base64: img.toString("base64") })).structuredContent;
  assert.equal(w.replaced, true);
  await call(mcp, "workbench_state", { project: "up", template: `<img id="ai" src="${w.url}">` });
  await page.waitForFunction(() => { const i = document.getElementById("ai"); return i && i.complete && i.naturalWidth === 40 && i.naturalHeight === 30; });
  // The AI's own scripts can upload too (workbench.upload), e.g. a drawing.
  const rec = await page.evaluate(() => workbench.upload(new Blob(["volts,amps\n5.02,0.1\n"], { type: "text/plain" }), { name: "run.csv", event: "" }));
  assert.deepEqual([rec.name, rec.mime, rec.sha256], ["run.csv", "text/csv", sha("volts,amps\n5.02,0.1\n")]);
});

test("a snapshot image has the page's colours at known pixels, and says so when no one looks", async () => {
  await call(mcp, "workbench_state", { project: "up",
    template: `<div id="r"></div><div id="b"></div><img id="ai2" src="/files/scope-annotated.png">`,
    styles: `#r,#b,#ai2{position:fixed;top:0;width:200px;height:150px;z-index:9}#r{left:0;background:rgb(255,0,0)}#b{left:300px;background:rgb(0,0,255)}#ai2{left:600px}` });
  await page.waitForFunction(() => { const i = document.getElementById("ai2"); return i && i.complete && i.naturalWidth === 40; });
  const r = await call(mcp, "workbench_snapshot", { project: "up", image: true });
  const s = r.structuredContent;
  assert.equal(s.connected, true);
  assert.deepEqual([s.image.width, s.image.height], [1280, 800], JSON.stringify(s.image ?? s.image_error));
  const block = r.content.find((c) => c.type === "image");
  const dec = decodePng(Buffer.from(block.data, "base64"));
  assert.deepEqual(dec.pixel(100, 75), [255, 0, 0, 255]);
  assert.deepEqual(dec.pixel(400, 75), [0, 0, 255, 255]);
  assert.deepEqual(dec.pixel(700, 75).slice(0, 2), [0, 255], "a same-origin image is drawn");
  const bg = dec.pixel(640, 400);
  assert.deepEqual(bg.slice(0, 3), [0x0a, 0x0f, 0x0c], "the page background");

  await page.close();
  let last;
  for (let i = 0; i < 20; i++) {
    last = (await call(mcp, "workbench_snapshot", { project: "up", image: true })).structuredContent;
    if (!last.connected) break;
    await new Promise((res) => setTimeout(res, 250));
  }
  assert.equal(last.connected, false);
  assert.match(last.message, /no browser/);
});
