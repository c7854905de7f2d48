// Load client for scripts/bench_tls.sh: the same relay binary over ws:// and
// over wss://, in one run, with this one client (Node `ws`; for wss:// it
// trusts the test CA through NODE_EXTRA_CA_CERTS). Per rep and per
// transport, alternating so drift on a shared machine hits both: fan-out to
// 500 agents in #general (closed loop: the next message once all 500 have
// the last), latency per delivery and the relay's CPU per delivery; then
// RSS per idle identified connection. Loopback only. Prints one JSON object.
//
// usage: node bench_tls.mjs --ws URL --ws-pid PID --wss URL --wss-pid PID [--reps 3] [--agents 500] [--messages 100] [--idle 1000]
import WebSocket from 'ws';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const arg = (n, d) => { const i = process.argv.indexOf(n); return i >= 0 ? process.argv[i + 1] : d; };
const targets = {
  ws: { url: arg('--ws'), pid: Number(arg('--ws-pid')) },
  wss: { url: arg('--wss'), pid: Number(arg('--wss-pid')) },
};
const reps = Number(arg('--reps', '3'));
const N = Number(arg('--agents', '500'));
const MESSAGES = Number(arg('--messages', '100'));
const IDLE = Number(arg('--idle', '1000'));
const TICK_MS = 10;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const pct = (s, p) => s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
const cpuMs = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) * TICK_MS; };
const rssKb = (pid) => Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]);

function agent(url, name) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const a = { ws, waiters: [], onMsg: null };
    a.wait = (type) => new Promise((res) => a.waiters.push({ type, res }));
    ws.on('error', reject);
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString());
      if (a.onMsg) a.onMsg(m);
      const i = a.waiters.findIndex((w) => w.type === m.type);
      if (i >= 0) a.waiters.splice(i, 1)[0].res(m);
    });
    ws.on('open', async () => { ws.send(JSON.stringify({ type: 'IDENTIFY', name })); await a.wait('WELCOME'); resolve(a); });
  });
}
async function many(url, n, tag) {
  const out = [];
  for (let i = 0; i < n; i += 50) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(50, n - i) }, (_, j) => agent(url, `${tag}${i + j}`)))));
  }
  return out;
}
const closeAll = async (agents) => { for (const a of agents) a.ws.terminate(); await sleep(500); };

async function fanout({ url, pid }, tag) {
  const agents = await many(url, N, tag);
  for (const a of agents) { a.ws.send(JSON.stringify({ type: 'JOIN', channel: '#general' })); await a.wait('JOINED'); }
  const lat = [];
  let pending = 0;
  let done = null;
  for (const a of agents) {
    a.onMsg = (m) => {
      if (m.type !== 'MSG' || m.replay) return;
      lat.push(performance.now() - Number(m.content.split(':')[1]));
      if (--pending === 0) done();
    };
  }
  await sleep(300);
  const c0 = cpuMs(pid);
  for (let i = 0; i < MESSAGES; i++) {
    pending = N;
    const all = new Promise((r) => { done = r; });
    agents[0].ws.send(JSON.stringify({ type: 'MSG', to: '#general', content: `${i}:${performance.now()}` }));
    await all;
  }
  const cpu = cpuMs(pid) - c0;
  await closeAll(agents);
  lat.sort((a, b) => a - b);
  return { p50_ms: pct(lat, 50), p99_ms: pct(lat, 99), cpu_us_per_delivery: (cpu * 1000) / lat.length, deliveries: lat.length };
}

async function idle({ url, pid }, tag) {
  await sleep(500);
  const r0 = rssKb(pid);
  const agents = await many(url, IDLE, tag);
  await sleep(1000);
  const r1 = rssKb(pid);
  await closeAll(agents);
  return { rss_per_conn_kb: (r1 - r0) / IDLE };
}

const runs = { ws: [], wss: [] };
for (let r = 0; r < reps; r++) {
  for (const t of ['ws', 'wss']) runs[t].push(await fanout(targets[t], `f${t}${r}-`));
}
const out = {};
for (const t of ['ws', 'wss']) {
  out[t] = {
    p50_ms: median(runs[t].map((x) => x.p50_ms)),
    p99_ms: median(runs[t].map((x) => x.p99_ms)),
    cpu_us_per_delivery: median(runs[t].map((x) => x.cpu_us_per_delivery)),
    runs: runs[t],
    idle: await idle(targets[t], `i${t}-`),
  };
}
console.log(JSON.stringify(out));
process.exit(0);
