// Minimal AgentChat relay on Node + ws: the baseline `workbench relay` is
// benchmarked against (scripts/bench_relay.sh). Same protocol subset as the
// Rust relay (IDENTIFY, JOIN/LEAVE, MSG to channels and agents, replay,
// LIST_CHANNELS/LIST_AGENTS, CREATE_CHANNEL/INVITE, PING, token-bucket rate
// limit, 64 KiB frames), written the way AgentChat 0.3.0 writes it: one
// event loop, JSON.stringify per delivery. Not for production use.
//
// usage: node relay.mjs [--port 0] [--host 127.0.0.1] [--rate-burst 10] [--rate-per-sec 1] [--buffer-size 20]
// Prints {"event":"listening","port":N} on stderr once bound.

import { WebSocketServer } from 'ws';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
const port = Number(arg('--port', '6667'));
const host = arg('--host', '127.0.0.1');
const burst = Number(arg('--rate-burst', '10'));
const perSec = Number(arg('--rate-per-sec', '1'));
const bufferSize = Number(arg('--buffer-size', '20'));

const NAME = /^[A-Za-z0-9_-]{1,32}$/;
const CHANNEL = /^#[A-Za-z0-9_-]{1,31}$/;
const agents = new Map(); // ws -> {id, name, channels:Set}
const byId = new Map(); // id -> ws
const channels = new Map(); // name -> {inviteOnly, invited:Set, members:Set<ws>, replay:[]}
for (const c of ['#general', '#agents']) channels.set(c, { inviteOnly: false, invited: new Set(), members: new Set(), replay: [] });

const send = (ws, msg) => { if (ws.readyState === 1) ws.send(JSON.stringify({ ...msg, ts: msg.ts ?? Date.now() })); };
const error = (ws, code, message) => send(ws, { type: 'ERROR', code, message });
const randomId = () => '@' + Array.from({ length: 8 }, () => 'abcdefghijklmnopqrstuvwxyz0123456789'[Math.floor(Math.random() * 36)]).join('');

function leaveAll(ws) {
  const a = agents.get(ws);
  if (!a) return;
  for (const name of a.channels) {
    const ch = channels.get(name);
    ch.members.delete(ws);
    for (const m of ch.members) send(m, { type: 'AGENT_LEFT', channel: name, agent: a.id });
  }
  byId.delete(a.id);
  agents.delete(ws);
}

function handle(ws, state, raw, isBinary) {
  if (isBinary) return error(ws, 'INVALID_MSG', 'Binary frames are not supported');
  let msg;
  try { msg = JSON.parse(raw.toString()); } catch { return error(ws, 'INVALID_MSG', 'Invalid JSON'); }
  if (!msg || typeof msg !== 'object' || !msg.type) return error(ws, 'INVALID_MSG', 'Missing message type');
  const me = agents.get(ws);
  const needAuth = () => { if (!me) { error(ws, 'AUTH_REQUIRED', 'Must IDENTIFY first'); return true; } return false; };
  switch (msg.type) {
    case 'IDENTIFY': {
      if (!NAME.test(msg.name ?? '')) return error(ws, 'INVALID_MSG', 'Invalid agent name');
      if (me) return error(ws, 'INVALID_MSG', 'Already identified');
      let id; do { id = randomId(); } while (byId.has(id));
      agents.set(ws, { id, name: msg.name, channels: new Set() });
      byId.set(id, ws);
      return send(ws, { type: 'WELCOME', agent_id: id, server: 'node-baseline' });
    }
    case 'JOIN': {
      if (!CHANNEL.test(msg.channel ?? '')) return error(ws, 'INVALID_MSG', 'Invalid channel name');
      if (needAuth()) return;
      const ch = channels.get(msg.channel);
      if (!ch) return error(ws, 'CHANNEL_NOT_FOUND', 'Channel not found');
      if (ch.inviteOnly && !ch.invited.has(me.id)) return error(ws, 'NOT_INVITED', 'Not invited');
      for (const m of ch.members) send(m, { type: 'AGENT_JOINED', channel: msg.channel, agent: me.id });
      ch.members.add(ws);
      me.channels.add(msg.channel);
      send(ws, { type: 'JOINED', channel: msg.channel, agents: [...ch.members].map((m) => agents.get(m).id) });
      for (const r of ch.replay) send(ws, { ...r, replay: true });
      return;
    }
    case 'LEAVE': {
      if (needAuth()) return;
      const ch = channels.get(msg.channel);
      if (!ch) return error(ws, 'CHANNEL_NOT_FOUND', 'Channel not found');
      ch.members.delete(ws);
      me.channels.delete(msg.channel);
      send(ws, { type: 'LEFT', channel: msg.channel });
      for (const m of ch.members) send(m, { type: 'AGENT_LEFT', channel: msg.channel, agent: me.id });
      return;
    }
    case 'MSG': {
      if (typeof msg.to !== 'string' || typeof msg.content !== 'string' || msg.content.length > 4096) return error(ws, 'INVALID_MSG', 'Bad MSG');
      if (needAuth()) return;
      const now = Date.now();
      state.tokens = Math.min(burst, state.tokens + ((now - state.last) / 1000) * perSec);
      state.last = now;
      if (state.tokens < 1) return error(ws, 'RATE_LIMITED', 'Rate limit exceeded');
      state.tokens -= 1;
      const out = { type: 'MSG', from: me.id, to: msg.to, content: msg.content, ts: now };
      if (msg.sig) out.sig = msg.sig;
      if (msg.to.startsWith('#')) {
        const ch = channels.get(msg.to);
        if (!ch) return error(ws, 'CHANNEL_NOT_FOUND', 'Channel not found');
        if (!ch.members.has(ws)) return error(ws, 'NOT_INVITED', 'Not a member');
        for (const m of ch.members) send(m, out);
        ch.replay.push(out);
        if (ch.replay.length > bufferSize) ch.replay.shift();
      } else {
        const target = byId.get(msg.to);
        if (!target) return error(ws, 'AGENT_NOT_FOUND', 'Agent not found');
        send(target, out);
        if (target !== ws) send(ws, out);
      }
      return;
    }
    case 'LIST_CHANNELS':
      return send(ws, { type: 'CHANNELS', list: [...channels].filter(([, c]) => !c.inviteOnly).map(([name, c]) => ({ name, agents: c.members.size })) });
    case 'LIST_AGENTS': {
      const ch = channels.get(msg.channel);
      if (!ch) return error(ws, 'CHANNEL_NOT_FOUND', 'Channel not found');
      return send(ws, { type: 'AGENTS', channel: msg.channel, list: [...ch.members].map((m) => agents.get(m).id) });
    }
    case 'CREATE_CHANNEL': {
      if (!CHANNEL.test(msg.channel ?? '')) return error(ws, 'INVALID_MSG', 'Invalid channel name');
      if (needAuth()) return;
      if (channels.has(msg.channel)) return error(ws, 'CHANNEL_EXISTS', 'Channel exists');
      const ch = { inviteOnly: !!msg.invite_only, invited: new Set([me.id]), members: new Set([ws]), replay: [] };
      channels.set(msg.channel, ch);
      me.channels.add(msg.channel);
      return send(ws, { type: 'JOINED', channel: msg.channel, agents: [me.id] });
    }
    case 'INVITE': {
      if (needAuth()) return;
      const ch = channels.get(msg.channel);
      if (!ch) return error(ws, 'CHANNEL_NOT_FOUND', 'Channel not found');
      if (!ch.members.has(ws)) return error(ws, 'NOT_INVITED', 'Not a member');
      ch.invited.add(msg.agent);
      const t = byId.get(msg.agent);
      if (t) send(t, { type: 'MSG', from: me.id, to: msg.agent, content: `You have been invited to ${msg.channel}` });
      return;
    }
    case 'PING':
      return send(ws, { type: 'PONG' });
    default:
      return error(ws, 'INVALID_MSG', `Unknown message type: ${msg.type}`);
  }
}

const wss = new WebSocketServer({ port, host, maxPayload: 64 * 1024 });
wss.on('listening', () => {
  process.stderr.write(JSON.stringify({ event: 'listening', port: wss.address().port }) + '\n');
});
wss.on('connection', (ws) => {
  const state = { tokens: burst, last: Date.now() };
  ws.on('message', (raw, isBinary) => handle(ws, state, raw, isBinary));
  ws.on('close', () => leaveAll(ws));
  ws.on('error', () => {});
});
const stop = () => { wss.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
