// Load clients for scripts/soak_relay.sh (loopback only, bounded in time).
//
//   node scripts/soak_relay.mjs honest --url ws://127.0.0.1:P --secs S [--listeners 20] [--senders 2]
//     N listeners and M senders in #general; each sender sends one MSG a
//     second (inside the default per-connection limit) carrying its send
//     time; each listener records the delivery latency. Prints one JSON
//     line per window of --window secs: {"t","n","p50","p99","max","last_p99"}
//     where last_p99 is the p99 over messages of the slowest listener's
//     latency (the fan-out's last receiver).
//
//   node scripts/soak_relay.mjs spam --url ws://127.0.0.1:P --secs S [--conns 8] [--target @id]
//     C connections, each a fresh Ed25519 identity, each in a closed loop
//     (send, wait for the relay's answer, send again: as fast as the relay
//     lets it) creating invite-only channels, inviting random ids into them
//     and sending signed proposals to --target; when the relay refuses
//     for a quota, the connection reconnects with a new key to dodge the
//     per-agent ones. Prints a final JSON line of counts by answer.
//
// Uses `ws` from tests/compat/node_modules (scripts/soak_relay.sh runs npm ci).

import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'tests', 'compat', 'package.json'));
const WebSocket = require('ws');

const [mode, ...rest] = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? rest[i + 1] : dflt;
};
const url = opt('url');
const secs = Number(opt('secs', '10'));
if (!url || !url.startsWith('ws://127.0.0.1:') || !(secs > 0)) {
  console.error('usage: soak_relay.mjs honest|spam --url ws://127.0.0.1:PORT --secs S');
  process.exit(2);
}
const endAt = Date.now() + secs * 1000;
// Whatever happens, this process ends: the deadline plus a margin.
setTimeout(() => process.exit(3), secs * 1000 + 20000).unref();

function open() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

const pct = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : null);

async function honest() {
  const listeners = Number(opt('listeners', '20'));
  const senders = Number(opt('senders', '2'));
  const windowSecs = Number(opt('window', '10'));
  const seen = new Map(); // msg key -> array of latencies (ms)
  const agents = [];
  for (let i = 0; i < listeners + senders; i++) {
    const ws = await open();
    const welcome = new Promise((resolve) => {
      ws.on('message', (data) => {
        const m = JSON.parse(data.toString());
        if (m.type === 'WELCOME') resolve(m.agent_id);
        if (m.type === 'MSG' && !m.replay && i < listeners && m.content.startsWith('soak|')) {
          const [, key, sent] = m.content.split('|');
          const lat = performance.now() - Number(sent);
          if (!seen.has(key)) seen.set(key, []);
          seen.get(key).push(lat);
        }
      });
    });
    ws.send(JSON.stringify({ type: 'IDENTIFY', name: `honest${i}`, pubkey: null }));
    const id = await welcome;
    ws.send(JSON.stringify({ type: 'JOIN', channel: '#general' }));
    agents.push({ ws, id });
  }
  console.log(JSON.stringify({ ready: true, target: agents[0].id }));
  let n = 0;
  const send = () => {
    for (let s = 0; s < senders; s++) {
      const key = `${s}-${n}`;
      agents[listeners + s].ws.send(
        JSON.stringify({ type: 'MSG', to: '#general', content: `soak|${key}|${performance.now()}` }),
      );
    }
    n++;
  };
  const tick = setInterval(send, 1000);
  const report = () => {
    const all = [];
    const last = [];
    for (const lats of seen.values()) {
      all.push(...lats);
      if (lats.length === listeners) last.push(Math.max(...lats));
    }
    const lost = [...seen.values()].filter((l) => l.length < listeners).length;
    seen.clear();
    all.sort((a, b) => a - b);
    last.sort((a, b) => a - b);
    const r = (x) => (x === null ? null : Math.round(x * 100) / 100);
    console.log(
      JSON.stringify({
        t: Math.round((Date.now() - (endAt - secs * 1000)) / 1000),
        deliveries: all.length,
        p50: r(pct(all, 0.5)),
        p99: r(pct(all, 0.99)),
        max: r(all.length ? all[all.length - 1] : null),
        messages: last.length,
        last_p99: r(pct(last, 0.99)),
        incomplete: lost,
      }),
    );
  };
  const rep = setInterval(report, windowSecs * 1000);
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, endAt - Date.now())));
  clearInterval(tick);
  // Let the last messages arrive, then a final window.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  clearInterval(rep);
  report();
  for (const a of agents) a.ws.close();
  process.exit(0);
}

function newKey() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519', {
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { pubkey: publicKey, sign: (t) => crypto.sign(null, Buffer.from(t), privateKey).toString('base64') };
}

async function spamConn(counts, target) {
  let ops = 0;
  while (Date.now() < endAt) {
    let ws;
    try {
      ws = await open();
    } catch {
      counts.connect_failed = (counts.connect_failed || 0) + 1;
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    const key = newKey();
    const inbox = [];
    let waiter = null;
    ws.on('message', (d) => {
      inbox.push(JSON.parse(d.toString()));
      if (waiter) waiter();
    });
    const closed = new Promise((r) => ws.on('close', r));
    const next = async (pred) => {
      for (;;) {
        const i = inbox.findIndex(pred);
        if (i >= 0) return inbox.splice(i, 1)[0];
        const got = await Promise.race([new Promise((r) => (waiter = r)).then(() => 'msg'), closed.then(() => 'closed')]);
        if (got === 'closed' && inbox.findIndex(pred) < 0) return null;
      }
    };
    const answer = (m) => m.type === 'ERROR' || m.type === 'JOINED' || m.type === 'PROPOSAL' || m.type === 'PONG' || m.type === 'WELCOME';
    ws.send(JSON.stringify({ type: 'IDENTIFY', name: 'spam', pubkey: key.pubkey }));
    const w = await next(answer);
    if (!w || w.type !== 'WELCOME') {
      counts[`identify_${w ? w.code : 'closed'}`] = (counts[`identify_${w ? w.code : 'closed'}`] || 0) + 1;
      ws.terminate();
      continue;
    }
    const mine = [];
    let quota = 0;
    while (Date.now() < endAt && quota < 3) {
      const k = ops++ % 3;
      let msg;
      if (k === 0 || mine.length === 0) {
        const ch = `#s${crypto.randomBytes(6).toString('hex')}`;
        msg = { type: 'CREATE_CHANNEL', channel: ch, invite_only: true };
        ws.send(JSON.stringify(msg));
        const a = await next(answer);
        if (!a) break;
        const tag = a.type === 'ERROR' ? `create_${a.code}` : 'create_ok';
        counts[tag] = (counts[tag] || 0) + 1;
        if (a.type === 'JOINED') mine.push(ch);
        else quota++;
      } else if (k === 1) {
        const ch = mine[ops % mine.length];
        ws.send(JSON.stringify({ type: 'INVITE', channel: ch, agent: `@${crypto.randomBytes(4).toString('hex')}` }));
        ws.send(JSON.stringify({ type: 'PING' }));
        const a = await next((m) => m.type === 'ERROR' || m.type === 'PONG');
        if (!a) break;
        const tag = a.type === 'ERROR' ? `invite_${a.code}` : 'invite_ok';
        counts[tag] = (counts[tag] || 0) + 1;
        if (a.type === 'ERROR') {
          quota++;
          await next((m) => m.type === 'PONG');
        }
      } else {
        const task = `spam ${crypto.randomBytes(8).toString('hex')}`;
        const text = [target, task, '', '', '', ''].join('|');
        ws.send(JSON.stringify({ type: 'PROPOSAL', to: target, task, sig: key.sign(text) }));
        const a = await next((m) => m.type === 'ERROR' || m.type === 'PROPOSAL');
        if (!a) break;
        const tag = a.type === 'ERROR' ? `proposal_${a.code}` : 'proposal_ok';
        counts[tag] = (counts[tag] || 0) + 1;
        if (a.type === 'ERROR') quota++;
      }
    }
    counts.reconnects = (counts.reconnects || 0) + 1;
    ws.terminate();
  }
}

async function spam() {
  const conns = Number(opt('conns', '8'));
  const target = opt('target');
  if (!target || !target.startsWith('@')) {
    console.error('spam needs --target @id');
    process.exit(2);
  }
  const counts = {};
  const t0 = Date.now();
  await Promise.all(Array.from({ length: conns }, () => spamConn(counts, target)));
  const total = Object.entries(counts)
    .filter(([k]) => k !== 'reconnects')
    .reduce((s, [, v]) => s + v, 0);
  console.log(JSON.stringify({ spam: counts, ops: total, ops_per_sec: Math.round(total / ((Date.now() - t0) / 1000)) }));
  process.exit(0);
}

if (mode === 'honest') await honest();
else if (mode === 'spam') await spam();
else {
  console.error('mode must be honest or spam');
  process.exit(2);
}
