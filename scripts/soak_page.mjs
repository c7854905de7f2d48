// Soak of one page server (not a test; run by scripts/soak_page.sh): a quiet
// phase, then mixed abuse from 127.0.0.2 … 127.0.0.9 (all loopback on
// Linux; sockets are bound to them with localAddress) while a real client on
// 127.0.0.1 pushes 10 times a second and posts an event every second, and a
// Chromium viewer watches. Reports the viewer's push-to-DOM p50/p99 for both
// phases, peak RSS (VmHWM), bytes on disk, what each abuse got back, and
// whether every acknowledged event is in events.jsonl. Loopback only; every
// loop ends at its phase's deadline.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync, readdirSync, statSync, openSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import http from "node:http";
import { chromium } from "../tests/browser/node_modules/playwright-core/index.mjs";
import { CHROMIUM, CHROMIUM_ARGS } from "../tests/browser/lib.mjs";

const BIN = process.env.WORKBENCH_BIN;
const ABUSE_S = Number(process.argv[2] === "--abuse" ? process.argv[5] : process.argv[2] || 180);
const QUIET_S = Math.max(10, Math.min(30, Math.round(ABUSE_S / 6)));
const ATTACKERS = [2, 3, 4, 5, 6, 7, 8, 9].map((n) => `127.0.0.${n}`);
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

setTimeout(() => { console.error("soak: hard deadline exceeded"); process.exit(3); }, (QUIET_S + ABUSE_S + 120) * 1000).unref();

// The owner's pushes and the real page's events go over kept-alive connections from 127.0.0.1.
const ownerAgent = new http.Agent({ keepAlive: true, maxSockets: 4 });
function post(port, path, body, headers, agent = ownerAgent, localAddress = "127.0.0.1") {
  return new Promise((res) => {
    const data = Buffer.from(typeof body === "string" ? body : JSON.stringify(body));
    const req = http.request({ host: "127.0.0.1", port, path, method: "POST", agent, localAddress,
      headers: { "Content-Type": "application/json", "Content-Length": data.length, ...headers } }, (r) => {
      const chunks = [];
      r.on("data", (c) => chunks.push(c));
      r.on("end", () => res({ status: r.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    req.setTimeout(20_000, () => req.destroy(new Error("timeout")));
    req.on("error", (e) => res({ status: 0, body: String(e) }));
    req.end(data);
  });
}
// ---- abuse ------------------------------------------------------------
const abuseCounts = {};
const count = (kind, what) => { abuseCounts[kind] ??= {}; abuseCounts[kind][what] = (abuseCounts[kind][what] || 0) + 1; };
function statusOf(buf) { const m = /^HTTP\/1\.1 (\d{3})/.exec(buf.toString("latin1")); return m ? m[1] : "closed"; }

// A raw socket from `addr` that `behave`s until the deadline, then is reopened.
function keepOpening(port, kind, addr, until, behave) {
  return new Promise((done) => {
    const open = () => {
      if (now() >= until) return done();
      const s = net.connect({ host: "127.0.0.1", port, localAddress: addr });
      let first = Buffer.alloc(0);
      let timer = null;
      s.on("data", (d) => { if (first.length < 64) first = Buffer.concat([first, d]); });
      s.on("error", () => {});
      s.on("close", () => {
        clearInterval(timer);
        count(kind, statusOf(first));
        setTimeout(open, 200);
      });
      s.on("connect", () => { timer = behave(s); });
      // Everything ends at the deadline.
      setTimeout(() => s.destroy(), Math.max(0, until - now())).unref();
    };
    open();
  });
}

const idle = () => null;
const drip = (s) => { s.write("GET / HTTP/1.1\r\n"); return setInterval(() => s.write("X-Drip: x\r\n"), 1000); };
const stalledBody = (key) => (s) => {
  s.write(`POST /api/event HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-Workbench-Key: ${key}\r\nContent-Length: 60000\r\n\r\n{"name":"x","data":"`);
  return null;
};
const neverReading = (port) => (s) => {
  s.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  // Take the 101 and then stop reading for good.
  setTimeout(() => s.pause(), 50);
  return null;
};

async function eventFlood(port, key, addr, until) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  const filler = "f".repeat(2000);
  while (now() < until) {
    const r = await post(port, "/api/event", { name: "flood", data: filler }, { "X-Workbench-Key": key }, agent, addr);
    count("event flood", String(r.status));
    await sleep(25);
  }
  agent.destroy();
}

function startAbuse(port, key, until) {
  const jobs = [];
  for (const addr of ATTACKERS) {
    for (let i = 0; i < 20; i++) jobs.push(keepOpening(port, "idle socket", addr, until, idle));
    for (let i = 0; i < 4; i++) jobs.push(keepOpening(port, "header drip", addr, until, drip));
    for (let i = 0; i < 4; i++) jobs.push(keepOpening(port, "stalled body", addr, until, stalledBody(key)));
    for (let i = 0; i < 4; i++) jobs.push(keepOpening(port, "never-reading viewer", addr, until, neverReading(port)));
    jobs.push(eventFlood(port, key, addr, until));
  }
  // One address far past its per-client share.
  for (let i = 0; i < 160; i++) jobs.push(keepOpening(port, "over-cap socket", "127.0.0.10", until, idle));
  return jobs;
}

async function runAbuse(port, key, until) {
  await Promise.all(startAbuse(port, key, until));
  process.stdout.write(JSON.stringify(abuseCounts));
}

// `soak_page.mjs --abuse PORT KEY SECONDS`: the attackers, in their own
// process, so their event loop never delays the real client's pushes.
if (process.argv[2] === "--abuse") {
  const [, , , p, k, secs] = process.argv;
  await runAbuse(Number(p), k, now() + Number(secs) * 1000);
  process.exit(0);
}

const home = mkdtempSync(join(tmpdir(), "wb-soak-"));
const logFd = openSync(join(home, "server.log"), "w");
const srv = spawn(BIN, ["serve", "soak", "--host", "127.0.0.1", "--port", "0"], {
  env: { HOME: home, PATH: "/usr/bin:/bin", WORKBENCH_HOME: home },
  stdio: ["ignore", "pipe", logFd],
});
const url = await new Promise((res, rej) => {
  const t = setTimeout(() => rej(new Error("server printed no URL")), 15_000);
  srv.stdout.once("data", (d) => { clearTimeout(t); res(String(d).match(/http:\S+/)[0]); });
});
const port = Number(new URL(url).port);
const info = JSON.parse(readFileSync(join(home, "soak", ".server.json"), "utf8"));
const pid = info.pid;

// CPU seconds (user + system) a process has used so far.
function cpuSeconds(p) {
  const f = readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}
const loadavg = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");

function procStatus(key) {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith(key + ":"));
  return Number(line.split(/\s+/)[1]); // KiB
}

const owner = { Authorization: `Bearer ${info.token}` };

// The event key, read from HELLO on a raw WebSocket (anyone on the LAN can).
function eventKey() {
  return new Promise((res, rej) => {
    const s = net.connect({ host: "127.0.0.1", port });
    let buf = Buffer.alloc(0);
    s.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      const at = buf.indexOf("\r\n\r\n");
      if (at < 0 || buf.length < at + 6) return;
      const frame = buf.subarray(at + 4);
      const len = frame[1] & 0x7f;
      if (frame.length < 2 + len) return;
      s.destroy();
      res(JSON.parse(frame.subarray(2, 2 + len).toString()).event_key);
    });
    s.on("error", rej);
    s.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  });
}
const key = await eventKey();

// The Chromium viewer: every `data` push records push-to-DOM latency.
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
const page = await browser.newPage();
await page.goto(url);
await page.waitForSelector("#status.connected");
await post(port, "/api/state", {
  template: "<p>n = <b id='n'>-</b></p>",
  script: "window.__lat = window.__lat || []; workbench.on('data', d => { document.getElementById('n').textContent = String(d.n); window.__lat.push(performance.timeOrigin + performance.now() - d.t); });",
}, owner);
await page.waitForSelector("#n");

const acked = [];
const stats = { pushes: 0, pushFailed: 0, events: 0, eventFailed: 0 };
async function realClient(until) {
  let n = 0;
  let nextEvent = now();
  while (now() < until) {
    const t0 = now();
    const r = await post(port, "/api/state", { data: { n: ++n, t: now() } }, owner);
    if (r.status === 200) stats.pushes++; else stats.pushFailed++;
    if (now() >= nextEvent) {
      nextEvent += 1000;
      const e = await post(port, "/api/event", { name: "reading", data: { n } }, { "X-Workbench-Key": key });
      if (e.status === 200) { stats.events++; acked.push(JSON.parse(e.body).seq); } else stats.eventFailed++;
    }
    await sleep(Math.max(0, 100 - (now() - t0)));
  }
}

let got = {};
function abuseProcess(seconds) {
  const child = spawn(process.execPath, [process.argv[1], "--abuse", String(port), key, String(seconds)], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d) => { out += d; });
  return new Promise((res) => child.once("exit", () => { try { got = JSON.parse(out); } catch { got = { error: out }; } res(); }));
}

async function phase(seconds, withAbuse) {
  await page.evaluate(() => { window.__lat = []; });
  const cpu0 = cpuSeconds(pid);
  const load0 = loadavg();
  const until = now() + seconds * 1000;
  const abuse = withAbuse ? abuseProcess(seconds) : Promise.resolve();
  await Promise.all([realClient(until), abuse]);
  const lat = (await page.evaluate(() => window.__lat)).sort((a, b) => a - b);
  const q = (p) => lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : NaN;
  const raw = await page.evaluate(() => window.__lat);
  const slow = raw.map((v, i) => [i, Math.round(v)]).filter(([, v]) => v > 50);
  const server_cpu_s = +(cpuSeconds(pid) - cpu0).toFixed(1);
  return { load_before: load0, load_after: loadavg(), server_cpu_s, samples: lat.length, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: lat[lat.length - 1], over_50ms: slow.length, slow_at: slow.slice(0, 10) };
}

// ---- run --------------------------------------------------------------
const quiet = await phase(QUIET_S, false);
const hwmQuiet = procStatus("VmHWM");
const abused = await phase(ABUSE_S, true);
const hwm = procStatus("VmHWM");
const rssEnd = procStatus("VmRSS");
const alive = (() => { try { process.kill(pid, 0); return true; } catch { return false; } })();
const health = await new Promise((res) => http.get({ host: "127.0.0.1", port, path: "/health", agent: false }, (r) => res(r.statusCode)).on("error", () => res(0)));

// Every segment of the events log (events.jsonl, then events-NNNNNN.jsonl).
const segments = readdirSync(join(home, "soak")).filter((f) => /^events(-\d+)?\.jsonl$/.test(f));
const stored = new Set(segments.flatMap((f) => readFileSync(join(home, "soak", f), "utf8").split("\n"))
  .filter(Boolean).map((l) => { try { return JSON.parse(l).seq; } catch { return null; } }));
const missing = acked.filter((s) => !stored.has(s));
const du = (dir) => readdirSync(dir).reduce((n, f) => {
  const p = join(dir, f); const st = statSync(p);
  return n + (st.isDirectory() ? du(p) : st.size);
}, 0);

console.log(JSON.stringify({
  quiet_s: QUIET_S, abuse_s: ABUSE_S,
  viewer_push_to_dom_ms: { quiet, abused },
  peak_rss_mib: { after_quiet: +(hwmQuiet / 1024).toFixed(1), overall: +(hwm / 1024).toFixed(1), at_end: +(rssEnd / 1024).toFixed(1) },
  disk_bytes: { project: du(join(home, "soak")), server_log: statSync(join(home, "server.log")).size },
  real_client: { ...stats, acked_events_missing_on_disk: missing.length },
  abuse_answers: got,
  server_alive: alive, health_after: health,
}, null, 1));

await browser.close();
srv.kill("SIGTERM");
await new Promise((r) => srv.once("exit", r));
rmSync(home, { recursive: true, force: true });
process.exit(alive && health === 200 && missing.length === 0 ? 0 : 1);
