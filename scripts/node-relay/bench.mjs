// The issue 6 load client, kept to reproduce BENCHMARKS.md's older relay
// rows: runs that "Speed" scenarios against one relay (Rust or the
// Node baseline) in one Node process and prints one JSON object. Loopback
// only. scripts/bench_relay.sh now uses examples/relay_load.rs instead (a
// thread per agent, so the client is not the bottleneck; issue 13).
//
// usage: node bench.mjs --url ws://127.0.0.1:PORT --pid RELAY_PID [--reps 3] [--idle 5000] [--sustain-secs 10]

import WebSocket from 'ws';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const url = arg('--url');
const pid = Number(arg('--pid'));
const reps = Number(arg('--reps', '3'));
const idleCount = Number(arg('--idle', '5000'));
const sustainSecs = Number(arg('--sustain-secs', '10'));
const only = arg('--only', 'all'); // all | idle | core
const TICK_MS = 10; // /proc CPU times are in 1/100 s on Linux

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

function cpuMs() {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_MS; // utime + stime
}
function rssKb() {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
  return Number(m[1]);
}

/** A connected, identified agent; `onMsg` sees every parsed message. */
function agent(name) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const a = { ws, id: null, waiters: [], onMsg: null };
    ws.on('error', reject);
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (a.onMsg) a.onMsg(m);
      const w = a.waiters.findIndex((x) => x.type === m.type);
      if (w >= 0) a.waiters.splice(w, 1)[0].resolve(m);
    });
    ws.on('open', async () => {
      ws.send(JSON.stringify({ type: 'IDENTIFY', name }));
      a.id = (await a.wait('WELCOME')).agent_id;
      resolve(a);
    });
    a.wait = (type) => new Promise((res) => a.waiters.push({ type, resolve: res }));
  });
}

async function many(n, name, batch = 100) {
  const out = [];
  for (let i = 0; i < n; i += batch) {
    out.push(...(await Promise.all(Array.from({ length: Math.min(batch, n - i) }, (_, j) => agent(`${name}${i + j}`)))));
  }
  return out;
}

async function joinAll(agents, channel) {
  for (const a of agents) {
    a.ws.send(JSON.stringify({ type: 'JOIN', channel }));
    await a.wait('JOINED');
  }
}

function closeAll(agents) {
  for (const a of agents) a.ws.terminate();
  return sleep(500);
}

/** One sender, n receivers; closed loop: the next message goes out once
 * every receiver has the previous one. Latency per delivery. */
async function fanout(n, messages = 100) {
  const agents = await many(n, `fan${n}-`);
  await joinAll(agents, '#general');
  const lat = [];
  let pending = 0;
  let done = null;
  for (const a of agents) {
    a.onMsg = (m) => {
      if (m.type !== 'MSG' || m.replay) return;
      const sent = Number(m.content.split(':')[1]);
      lat.push(performance.now() - sent);
      if (--pending === 0) done();
    };
  }
  await sleep(200);
  for (let i = 0; i < messages; i++) {
    pending = n;
    const all = new Promise((r) => { done = r; });
    agents[0].ws.send(JSON.stringify({ type: 'MSG', to: '#general', content: `${i}:${performance.now()}` }));
    await all;
  }
  await closeAll(agents);
  lat.sort((a, b) => a - b);
  return { p50: pct(lat, 50), p99: pct(lat, 99), deliveries: lat.length };
}

/** 200 agents each send one message every 1.1 s for `secs` into a channel
 * of 200; counts deliveries and the relay's CPU time. */
async function sustained(n = 200, secs = sustainSecs) {
  const agents = await many(n, 'sus');
  await joinAll(agents, '#agents');
  let delivered = 0;
  let sent = 0;
  for (const a of agents) a.onMsg = (m) => { if (m.type === 'MSG' && !m.replay) delivered++; };
  await sleep(500);
  const cpu0 = cpuMs();
  const t0 = performance.now();
  const timers = agents.map((a, i) => new Promise((resolve) => {
    const start = (i / n) * 1100;
    setTimeout(() => {
      const iv = setInterval(() => {
        if (performance.now() - t0 >= secs * 1000) { clearInterval(iv); resolve(); return; }
        sent++;
        a.ws.send(JSON.stringify({ type: 'MSG', to: '#agents', content: `s${i}-${sent}` }));
      }, 1100);
    }, start);
  }));
  await Promise.all(timers);
  const expected = () => sent * n;
  const deadline = performance.now() + 10000;
  while (delivered < expected() && performance.now() < deadline) await sleep(50);
  const cpu = cpuMs() - cpu0;
  await closeAll(agents);
  return { sent, expected: expected(), delivered, relay_cpu_ms: cpu, cpu_us_per_delivery: (cpu * 1000) / Math.max(1, delivered) };
}

/** `count` identified idle connections: RSS per connection, then CPU while idle. */
async function idle(count = idleCount) {
  await sleep(500);
  const rss0 = rssKb();
  const agents = await many(count, 'idle', 250);
  await sleep(1000);
  const rss1 = rssKb();
  const cpu0 = cpuMs();
  await sleep(5000);
  const idleCpu = cpuMs() - cpu0;
  await closeAll(agents);
  return { connections: agents.length, rss_before_kb: rss0, rss_after_kb: rss1, rss_per_conn_kb: (rss1 - rss0) / count, idle_cpu_ms_5s_with_conns: idleCpu };
}

const results = { url };
if (only === 'core') {
  // scripts/bench_relay_durable.sh: fan-out at 500 and sustained 200x200 only.
  const runs = [];
  for (let r = 0; r < reps; r++) runs.push(await fanout(500));
  results.fanout_500 = { p50_ms: median(runs.map((x) => x.p50)), p99_ms: median(runs.map((x) => x.p99)), runs };
  results.sustained = await sustained();
  console.log(JSON.stringify(results));
  process.exit(0);
}
if (only === 'idle') {
  results.idle = await idle();
  console.log(JSON.stringify(results));
  process.exit(0);
}
{
  const c0 = cpuMs();
  await sleep(3000);
  results.idle_cpu_ms_3s_empty = cpuMs() - c0;
}
for (const n of [10, 100, 500]) {
  const runs = [];
  for (let r = 0; r < reps; r++) runs.push(await fanout(n));
  results[`fanout_${n}`] = { p50_ms: median(runs.map((x) => x.p50)), p99_ms: median(runs.map((x) => x.p99)), runs };
}
results.sustained = await sustained();
results.idle = await idle();
console.log(JSON.stringify(results));
process.exit(0);
