// HTTPS pages in Debian's Chromium (issue 15): `workbench mcp` with
// WORKBENCH_CERT/WORKBENCH_KEY starts a server that serves HTTPS; the page
// loads as a secure context, its WebSocket is wss://, and a push arrives.
// The certificates are made here with the openssl CLI; Chromium trusts
// exactly the server's key through --ignore-certificate-errors-spki-list,
// a flag used only in this test. Every wait is bounded.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { Mcp, CHROMIUM, CHROMIUM_ARGS } from "./lib.mjs";

setTimeout(() => { console.error("tls.mjs: hard deadline exceeded"); process.exit(3); }, 120_000).unref();

const dir = mkdtempSync(join(tmpdir(), "wb-browser-tls-"));
const home = join(dir, "home");
const ssl = (args) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
ssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
     "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=workbench browser test CA"]);
ssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
     "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
writeFileSync(join(dir, "ext.cnf"),
  "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
ssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
     "-out", "server.pem", "-days", "10", "-extfile", "ext.cnf"]);
// base64(sha256(SubjectPublicKeyInfo)): what the SPKI list flag takes.
const spkiDer = execFileSync("openssl", ["pkey", "-pubin", "-outform", "der"], {
  input: ssl(["x509", "-in", "server.pem", "-pubkey", "-noout"]),
});
const spki = execFileSync("openssl", ["dgst", "-sha256", "-binary"], { input: spkiDer }).toString("base64");

const mcp = new Mcp(home, { WORKBENCH_CERT: join(dir, "server.pem"), WORKBENCH_KEY: join(dir, "server.key") });
let browser;

after(async () => {
  if (browser) await browser.close().catch(() => {});
  try { await mcp.call("workbench_stop", { project: "tls" }); } catch { /* already stopped */ }
  mcp.close();
  rmSync(dir, { recursive: true, force: true });
});

test("an HTTPS page whose WebSocket is wss:// gets a push", async () => {
  await mcp.request("initialize", { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "tls", version: "1" } });
  const s = await mcp.call("workbench_scaffold", { name: "tls", title: "TLS bench" });
  assert.match(s.url, /^https:\/\/127\.0\.0\.1:\d+\/$/);

  browser = await chromium.launch({
    executablePath: CHROMIUM, headless: true,
    args: [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${spki}`],
  });
  const page = await browser.newPage();
  page.setDefaultTimeout(15_000);
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  await page.goto(s.url);
  await page.waitForSelector("#status.connected");
  assert.equal(await page.evaluate(() => location.protocol), "https:");
  assert.equal(await page.evaluate(() => window.isSecureContext), true, "a secure context");
  assert.ok(sockets.length >= 1 && sockets.every((u) => u.startsWith("wss://127.0.0.1:")), `wss only: ${sockets}`);

  await mcp.call("workbench_state", { project: "tls", template: '<h2 id="pushed">over wss</h2>' });
  await page.waitForSelector("#pushed");
  assert.equal(await page.textContent("#pushed"), "over wss");
});
