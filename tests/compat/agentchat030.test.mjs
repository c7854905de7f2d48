// Wire-compatibility test: an AgentChat 0.3.0 client against the REAL
// `workbench relay` binary, over loopback.
//
// Why a stand-in client: the published package `@tjamescouch/agentchat` is
// not on the npm registry this project can reach (`npm view` answers 404 for
// the package name, every version), so it cannot be pinned in package.json.
// `Client030` below is therefore written from the protocol page
// (shared/design/AGENTCHAT.md, "what 0.3.0 clients send and expect") and
// mirrors the 0.3.0 client's observable behaviour byte for byte where it
// matters: the same `ws` library, IDENTIFY with `pubkey: null` for an
// ephemeral agent (0.3.0 sends `pubkey: this.pubkey` with `options.pubkey ||
// null`), MSG carrying `ts` + `sig` only when an identity is loaded, the
// signed texts JSON.stringify({to,content,ts}) / `to|task|amount|...` /
// `ACCEPT|id|payment_code` ..., Node crypto Ed25519 with SPKI/PKCS#8 PEM, and
// the identity file as `JSON.stringify(data, null, 2)`. Unlike the Rust tests
// it signs live, with Node's crypto, and the relay verifies those signatures.
//
// Run: node --test tests/compat/agentchat030.test.mjs (scripts/compat.sh
// builds the binary and installs `ws` first).

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.WORKBENCH_BIN || path.join(ROOT, 'target', 'debug', 'workbench');
const WAIT_MS = 4000; // one expected frame
const TEST_MS = 30000; // one test
const FILE_DEADLINE_MS = 120000; // the whole file

const deadline = setTimeout(() => {
  console.error(`compat: whole-file deadline of ${FILE_DEADLINE_MS} ms passed; killing the relay`);
  relay?.kill('SIGKILL');
  process.exit(1);
}, FILE_DEADLINE_MS);
deadline.unref();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wb-compat-'));
let relay = null;
let url = null;
// scripts/compat_tls.sh runs this same file over wss://: the relay gets
// --cert/--key, Node's `ws` trusts the test CA through NODE_EXTRA_CA_CERTS,
// and our own CLI gets --ca.
const TLS = process.env.WORKBENCH_COMPAT_CERT
  ? { cert: process.env.WORKBENCH_COMPAT_CERT, key: process.env.WORKBENCH_COMPAT_KEY, ca: process.env.NODE_EXTRA_CA_CERTS }
  : null;
const caArgs = TLS ? ['--ca', TLS.ca] : [];
const clients = new Set();

// ---------- the relay ----------

before(async () => {
  assert.ok(fs.existsSync(BIN), `${BIN} missing: run cargo build first`);
  const tlsArgs = TLS ? ['--cert', TLS.cert, '--key', TLS.key] : [];
  relay = spawn(BIN, ['relay', '--ephemeral', '--host', '127.0.0.1', '--port', '0', '--name', 'compat-relay', ...tlsArgs], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const port = await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no listening line in 10 s: ${buf}`)), 10000);
    relay.on('exit', (code) => reject(new Error(`relay exited ${code}: ${buf}`)));
    relay.stderr.setEncoding('utf8');
    relay.stderr.on('data', (d) => {
      buf += d;
      const line = buf.split('\n')[0];
      if (!buf.includes('\n')) return;
      clearTimeout(timer);
      const first = JSON.parse(line);
      if (first.event !== 'listening') reject(new Error(`first log line: ${line}`));
      else resolve(first.port);
    });
  });
  url = TLS ? `wss://localhost:${port}` : `ws://127.0.0.1:${port}`;
});

after(() => {
  for (const c of clients) c.close();
  relay?.kill('SIGTERM');
  const t = setTimeout(() => relay?.kill('SIGKILL'), 3000);
  t.unref();
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ---------- 0.3.0 identity, as lib/identity.js does it ----------

const agentIdOf = (pem) => crypto.createHash('sha256').update(pem).digest('hex').substring(0, 8);

function generateIdentity(name) {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519', {
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  return { name, pubkey: publicKey, privkey: privateKey, created: new Date().toISOString() };
}
// AgentChat's Identity.save() writes with `mode: 0o600` (owner only), and
// workbench refuses a private key that group or others can read.
const saveIdentity = (id, file) => fs.writeFileSync(file, JSON.stringify(id, null, 2), { mode: 0o600 });
const loadIdentity = (file) => JSON.parse(fs.readFileSync(file, 'utf-8'));
const sign = (privkey, text) =>
  crypto.sign(null, Buffer.from(text), crypto.createPrivateKey(privkey)).toString('base64');
const verify = (pubkey, text, sig) =>
  crypto.verify(null, Buffer.from(text), crypto.createPublicKey(pubkey), Buffer.from(sig, 'base64'));

// The signed texts (AGENTCHAT.md, "What is signed").
const msgText = (m) => JSON.stringify({ to: m.to, content: m.content, ts: m.ts });
// A relayed MSG's `ts` is the relay's clock (as 0.3.0 relays do); the ts the
// sender signed travels as `sig_ts` (docs/relay-trust.md).
const relayedText = (m) => JSON.stringify({ to: m.to, content: m.content, ts: m.sig_ts });
const proposalText = (p) =>
  [p.to, p.task, p.amount || '', p.currency || '', p.payment_code || '', p.expires || ''].join('|');

// ---------- the client, as a 0.3.0 user drives it ----------

class Client030 {
  constructor({ name, identity = null }) {
    this.name = name;
    this.identity = identity;
    this.pubkey = identity ? identity.pubkey : null;
    this.inbox = []; // every frame received, in order
    this.waiters = [];
    this.agentId = null;
    clients.add(this);
  }

  open() {
    this.ws = new WebSocket(this.url || url);
    this.ws.on('message', (data) => {
      const msg = JSON.parse(data.toString());
      this.inbox.push(msg);
      for (const w of [...this.waiters]) w();
    });
    this.closed = new Promise((resolve) => this.ws.on('close', resolve));
    return new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
  }

  async connect() {
    await this.open();
    // 0.3.0 sends `pubkey: this.pubkey`, which is null without an identity.
    this._send({ type: 'IDENTIFY', name: this.name, pubkey: this.pubkey });
    const welcome = await this.expect((m) => m.type === 'WELCOME' || m.type === 'ERROR', 'WELCOME');
    if (welcome.type === 'ERROR') throw new Error(`${welcome.code}: ${welcome.message}`);
    this.agentId = welcome.agent_id;
    return welcome;
  }

  _send(msg) {
    this.ws.send(JSON.stringify(msg));
  }

  raw(text) {
    this.ws.send(text);
  }

  // Waits for (and consumes) the first unconsumed frame matching `pred`.
  expect(pred, what = 'frame', ms = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const i = this.inbox.findIndex((m) => !m.__seen && pred(m));
        if (i < 0) return false;
        this.inbox[i].__seen = true;
        done();
        resolve(this.inbox[i]);
        return true;
      };
      const timer = setTimeout(() => {
        done();
        const got = this.inbox.filter((m) => !m.__seen).map((m) => JSON.stringify(m));
        reject(new Error(`${this.name}: no ${what} within ${ms} ms; unconsumed: ${got.join(' ')}`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
      };
      this.waiters.push(check);
      check();
    });
  }

  expectType(type, extra = () => true, ms) {
    return this.expect((m) => m.type === type && extra(m), type, ms);
  }

  async expectError(code) {
    const e = await this.expectType('ERROR');
    assert.equal(e.code, code, `expected ${code}, got ${JSON.stringify(e)}`);
    assert.equal(typeof e.message, 'string');
    return e;
  }

  async join(channel) {
    this._send({ type: 'JOIN', channel });
    const r = await this.expect((m) => (m.type === 'JOINED' && m.channel === channel) || m.type === 'ERROR', 'JOINED');
    if (r.type === 'ERROR') throw Object.assign(new Error(r.message), { code: r.code });
    return r;
  }

  leave(channel) {
    this._send({ type: 'LEAVE', channel });
  }

  send(to, content) {
    const msg = { type: 'MSG', to, content };
    if (this.identity && this.identity.privkey) {
      msg.ts = Date.now();
      msg.sig = sign(this.identity.privkey, msgText(msg));
    }
    this._send(msg);
    return msg;
  }

  dm(agent, content) {
    return this.send(agent.startsWith('@') ? agent : `@${agent}`, content);
  }

  async listChannels() {
    this._send({ type: 'LIST_CHANNELS' });
    return (await this.expectType('CHANNELS')).list;
  }

  async listAgents(channel) {
    this._send({ type: 'LIST_AGENTS', channel });
    return (await this.expectType('AGENTS')).list;
  }

  async createChannel(channel, inviteOnly = false) {
    this._send({ type: 'CREATE_CHANNEL', channel, invite_only: inviteOnly });
    const r = await this.expect((m) => (m.type === 'JOINED' && m.channel === channel) || m.type === 'ERROR', 'JOINED');
    if (r.type === 'ERROR') throw Object.assign(new Error(r.message), { code: r.code });
    return r;
  }

  invite(channel, agent) {
    this._send({ type: 'INVITE', channel, agent: agent.startsWith('@') ? agent : `@${agent}` });
  }

  // Proposals: sign what 0.3.0 signs, send, return the relay's echo.
  async propose(to, { task, amount, currency, payment_code, terms, expires }) {
    to = to.startsWith('@') ? to : `@${to}`;
    const p = { type: 'PROPOSAL', to, task, amount, currency, payment_code, terms, expires };
    p.sig = sign(this.identity.privkey, proposalText(p));
    this._send(JSON.parse(JSON.stringify(p)));
    return this.expect((m) => (m.type === 'PROPOSAL' && m.from === this.agentId && m.task === task) || m.type === 'ERROR', 'PROPOSAL echo');
  }

  async respond(type, proposal_id, extra, signedText) {
    const m = { type, proposal_id, ...extra, sig: sign(this.identity.privkey, signedText) };
    this._send(JSON.parse(JSON.stringify(m)));
    return this.expect((r) => (r.type === type && r.proposal_id === proposal_id) || r.type === 'ERROR', `${type} echo`);
  }
  // Like AgentChat's client, a missing optional part goes on the wire as an
  // explicit null (`payment_code = null` defaults) and signs as ''.
  accept(id, payment_code = null) {
    return this.respond('ACCEPT', id, { payment_code }, `ACCEPT|${id}|${payment_code || ''}`);
  }
  reject(id, reason = null) {
    return this.respond('REJECT', id, { reason }, `REJECT|${id}|${reason || ''}`);
  }
  complete(id, proof = null) {
    return this.respond('COMPLETE', id, { proof }, `COMPLETE|${id}|${proof || ''}`);
  }
  dispute(id, reason) {
    return this.respond('DISPUTE', id, { reason }, `DISPUTE|${id}|${reason}`);
  }

  close() {
    clients.delete(this);
    try {
      this.ws?.terminate();
    } catch {}
  }
}

const run = (args, ms = 10000) =>
  new Promise((resolve, reject) => {
    execFile(BIN, args, { timeout: ms }, (err, stdout, stderr) => {
      if (err) reject(new Error(`workbench ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });

const t = (name, fn) => test(name, { timeout: TEST_MS }, fn);
let chanSeq = 0;
const freshChannel = (p) => `#${p}${process.pid % 1000}x${chanSeq++}`;

// ---------- ephemeral agents ----------

t('connect + IDENTIFY without a key (pubkey: null) gets WELCOME with a random id', async () => {
  const a = new Client030({ name: 'eph-a' });
  const w = await a.connect();
  assert.match(w.agent_id, /^@[a-z0-9]{8}$/);
  assert.equal(w.server, 'compat-relay');
  assert.equal(typeof w.ts, 'number');
  a.close();
});

t('join #general, channel MSG reaches every member including the sender', async () => {
  const a = new Client030({ name: 'gen-a' });
  const b = new Client030({ name: 'gen-b' });
  await a.connect();
  await b.connect();
  const ja = await a.join('#general');
  assert.ok(ja.agents.includes(a.agentId));
  const jb = await b.join('#general');
  assert.ok(jb.agents.includes(a.agentId) && jb.agents.includes(b.agentId));
  const aj = await a.expectType('AGENT_JOINED', (m) => m.agent === b.agentId);
  assert.equal(aj.channel, '#general');

  const content = `hello from a ${Date.now()}`;
  a.send('#general', content);
  for (const c of [a, b]) {
    const m = await c.expectType('MSG', (m) => m.content === content);
    assert.equal(m.from, a.agentId);
    assert.equal(m.to, '#general');
    assert.equal(typeof m.ts, 'number');
    assert.equal(m.sig, undefined);
    assert.equal(m.replay, undefined);
  }

  b.leave('#general');
  await b.expectType('LEFT', (m) => m.channel === '#general');
  await a.expectType('AGENT_LEFT', (m) => m.agent === b.agentId && m.channel === '#general');
  b.close();
  a.close();
});

t('DM is delivered to the target and echoed to the sender; unknown agent is AGENT_NOT_FOUND', async () => {
  const a = new Client030({ name: 'dm-a' });
  const b = new Client030({ name: 'dm-b' });
  await a.connect();
  await b.connect();
  a.dm(b.agentId.slice(1), 'psst'); // 0.3.0's dm() adds the @
  for (const c of [b, a]) {
    const m = await c.expectType('MSG', (m) => m.content === 'psst');
    assert.equal(m.from, a.agentId);
    assert.equal(m.to, b.agentId);
  }
  a.dm('@zzzzzzzz', 'anyone?');
  await a.expectError('AGENT_NOT_FOUND');
  a.close();
  b.close();
});

t('LIST_CHANNELS (also before IDENTIFY) and LIST_AGENTS', async () => {
  const anon = new Client030({ name: 'anon' });
  await anon.open();
  const list = await anon.listChannels();
  const names = list.map((c) => c.name);
  assert.ok(names.includes('#general') && names.includes('#agents'), JSON.stringify(list));
  for (const c of list) assert.equal(typeof c.agents, 'number');

  const a = new Client030({ name: 'lister' });
  await a.connect();
  await a.join('#agents');
  const agents = await anon.listAgents('#agents');
  assert.ok(agents.includes(a.agentId), JSON.stringify(agents));
  const ch = (await a.listChannels()).find((c) => c.name === '#agents');
  assert.ok(ch.agents >= 1);
  anon.close();
  a.close();
});

t('invite-only channel: hidden from CHANNELS, NOT_INVITED until INVITE, invitee told', async () => {
  const owner = new Client030({ name: 'owner' });
  const guest = new Client030({ name: 'guest' });
  await owner.connect();
  await guest.connect();
  const chan = freshChannel('priv');
  const joined = await owner.createChannel(chan, true);
  assert.deepEqual(joined.agents, [owner.agentId]);
  assert.ok(!(await guest.listChannels()).some((c) => c.name === chan), 'private channel listed');

  await assert.rejects(guest.join(chan), (e) => e.code === 'NOT_INVITED');
  owner.invite(chan, guest.agentId);
  const note = await guest.expectType('MSG', (m) => m.from === owner.agentId);
  assert.ok(note.content.includes(chan), note.content);
  await guest.join(chan);
  await owner.expectType('AGENT_JOINED', (m) => m.agent === guest.agentId && m.channel === chan);

  await assert.rejects(owner.createChannel(chan), (e) => e.code === 'CHANNEL_EXISTS');
  owner.close();
  guest.close();
});

t('replay on join: recent channel messages arrive flagged replay:true, oldest first', async () => {
  const a = new Client030({ name: 'replay-a' });
  await a.connect();
  const chan = freshChannel('pub');
  await a.createChannel(chan);
  for (const content of ['one', 'two', 'three']) {
    a.send(chan, content);
    await a.expectType('MSG', (m) => m.content === content);
  }
  const late = new Client030({ name: 'replay-b' });
  await late.connect();
  await late.join(chan);
  const got = [];
  for (let i = 0; i < 3; i++) got.push(await late.expectType('MSG'));
  assert.deepEqual(got.map((m) => m.content), ['one', 'two', 'three']);
  for (const m of got) {
    assert.equal(m.replay, true);
    assert.equal(m.from, a.agentId);
    assert.equal(m.to, chan);
  }
  a.close();
  late.close();
});

t('errors: missing channel, MSG before IDENTIFY, garbage, non-member post, rate limit', async () => {
  const anon = new Client030({ name: 'early' });
  await anon.open();
  anon.send('#general', 'too early');
  await anon.expectError('AUTH_REQUIRED');
  anon.raw('not json');
  await anon.expectError('INVALID_MSG');
  anon.raw('{"type":"NOPE"}');
  await anon.expectError('INVALID_MSG');
  anon.raw('{"type":"IDENTIFY","name":"bad name!"}');
  await anon.expectError('INVALID_MSG');
  // The connection stays open after errors: PING still answered.
  anon._send({ type: 'PING' });
  await anon.expectType('PONG');

  const a = new Client030({ name: 'errs' });
  await a.connect();
  await assert.rejects(a.join('#does-not-exist'), (e) => e.code === 'CHANNEL_NOT_FOUND');
  a.send('#agents', 'not a member');
  await a.expectError('NOT_INVITED');
  a._send({ type: 'IDENTIFY', name: 'again', pubkey: null });
  await a.expectError('INVALID_MSG');

  // Token bucket: burst 10 by default; a client that does not pace itself
  // (0.3.0's CLI waits >= 1.1 s between sends) is told RATE_LIMITED.
  await a.join('#agents');
  for (let i = 0; i < 12; i++) a.send('#agents', `burst ${i}`);
  await a.expectError('RATE_LIMITED');
  anon.close();
  a.close();
});

// ---------- identities, signatures, proposals ----------

t('identity agents: stable ids, signed MSG accepted and relayed with sig and the signed ts', async () => {
  const alice = generateIdentity('alice');
  const file = path.join(tmp, 'alice.json');
  saveIdentity(alice, file);
  const loaded = loadIdentity(file);

  const a = new Client030({ name: 'alice', identity: loaded });
  const w = await a.connect();
  assert.equal(w.agent_id, `@${agentIdOf(alice.pubkey)}`);
  a.close();
  await a.closed;
  // Same key, new connection: same id (after the relay noticed the close).
  let again;
  for (let i = 0; ; i++) {
    again = new Client030({ name: 'alice', identity: loaded });
    try {
      await again.connect();
      break;
    } catch (e) {
      again.close();
      if (i > 20) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  assert.equal(again.agentId, w.agent_id);

  // A second connection with the same key while the first is on: refused.
  const dup = new Client030({ name: 'alice2', identity: loaded });
  await assert.rejects(dup.connect(), /INVALID_MSG/);
  dup.close();

  const bob = new Client030({ name: 'bob', identity: generateIdentity('bob') });
  await bob.connect();
  await again.join('#general');
  await bob.join('#general');
  const sent = again.send('#general', 'signed "hello" ünïcödé 🎉 \n');
  const got = await bob.expectType('MSG', (m) => m.from === again.agentId && m.content === sent.content);
  assert.equal(got.sig, sent.sig);
  assert.equal(got.sig_ts, sent.ts, 'relay must carry the signed ts');
  assert.equal(typeof got.ts, 'number');
  assert.ok(verify(alice.pubkey, relayedText(got), got.sig), 'receiver cannot verify the relayed signature');
  const own = await again.expectType('MSG', (m) => m.content === sent.content);
  assert.equal(own.sig, sent.sig);

  // Signed DM too.
  const dm = again.dm(bob.agentId, 'signed dm');
  const gotDm = await bob.expectType('MSG', (m) => m.content === 'signed dm');
  assert.ok(verify(alice.pubkey, relayedText(gotDm), gotDm.sig));
  assert.equal(gotDm.sig_ts, dm.ts);

  // A late joiner's replay still carries a verifiable signature.
  const chan = freshChannel('sig');
  await again.createChannel(chan);
  const s2 = again.send(chan, 'replayed and signed');
  await again.expectType('MSG', (m) => m.content === s2.content);
  await bob.join(chan).catch(() => {});
  const rep = await bob.expectType('MSG', (m) => m.content === s2.content && m.replay === true);
  assert.ok(verify(alice.pubkey, relayedText(rep), rep.sig), 'replayed signature does not verify');

  // A forged signature is refused (beyond 0.3.0, which only relays), and so
  // is an unsigned MSG from an identity with a key (issue 12).
  again._send({ type: 'MSG', to: '#general', content: 'forged', ts: Date.now(), sig: sign(bob.identity.privkey, 'x') });
  await again.expectError('SIGNATURE_REQUIRED');
  again._send({ type: 'MSG', to: '#general', content: 'unsigned' });
  await again.expectError('SIGNATURE_REQUIRED');
  // The same signed frame twice: the second is a replay.
  again._send(sent);
  await again.expectError('REPLAY_DETECTED');
  again.close();
  bob.close();
});

t('proposal lifecycle: propose → accept → complete, and reject / dispute paths', async () => {
  const alice = new Client030({ name: 'p-alice', identity: generateIdentity('p-alice') });
  const bob = new Client030({ name: 'p-bob', identity: generateIdentity('p-bob') });
  await alice.connect();
  await bob.connect();

  // 1. propose → accept → complete, with every optional field.
  const echo = await alice.propose(bob.agentId, {
    task: 'review | the PR', amount: 1.5, currency: 'USDC', payment_code: 'bc1qexample',
    terms: 'net 30', expires: 300,
  });
  assert.equal(echo.type, 'PROPOSAL', JSON.stringify(echo));
  assert.match(echo.id, /.+/);
  assert.equal(echo.status, 'pending');
  assert.equal(echo.from, alice.agentId);
  assert.equal(echo.to, bob.agentId);
  assert.equal(echo.amount, 1.5);
  assert.equal(typeof echo.expires, 'number');
  assert.ok(echo.expires > Date.now(), 'expires is absolute ms');
  const inbound = await bob.expectType('PROPOSAL', (m) => m.id === echo.id);
  assert.equal(inbound.sig, echo.sig);
  // What bob verifies: the text over the fields as sent (expires in seconds).
  assert.ok(verify(alice.identity.pubkey, proposalText({ ...inbound, expires: 300 }), inbound.sig));

  const acc = await bob.accept(echo.id, 'bc1qpay');
  assert.equal(acc.type, 'ACCEPT', JSON.stringify(acc));
  assert.equal(acc.status, 'accepted');
  assert.equal(acc.payment_code, 'bc1qpay');
  const accIn = await alice.expectType('ACCEPT', (m) => m.proposal_id === echo.id);
  assert.ok(verify(bob.identity.pubkey, `ACCEPT|${echo.id}|bc1qpay`, accIn.sig));

  const done = await alice.complete(echo.id, 'https://example.com/pr/1');
  assert.equal(done.type, 'COMPLETE', JSON.stringify(done));
  assert.equal(done.status, 'completed');
  assert.equal(done.completed_by, alice.agentId);
  await bob.expectType('COMPLETE', (m) => m.proposal_id === echo.id && m.proof === 'https://example.com/pr/1');

  // Completing again: the proposal is no longer accepted.
  const again = await alice.complete(echo.id, 'twice');
  assert.equal(again.type, 'ERROR');
  assert.equal(again.code, 'INVALID_PROPOSAL');

  // 2. minimal proposal (no optional fields) → reject without a reason.
  const p2 = await alice.propose(bob.agentId, { task: 'tiny task' });
  assert.equal(p2.type, 'PROPOSAL', JSON.stringify(p2));
  // No `expires` sent: 0.3.0 stores null (never); this relay gives it its
  // default expiry (--proposal-expiry, 3600 s), an absolute ms time as
  // 0.3.0 writes any expiry.
  assert.equal(p2.expires, p2.created_at + 3600 * 1000);
  await bob.expectType('PROPOSAL', (m) => m.id === p2.id);
  // Only the recipient may accept/reject.
  const notYours = await alice.accept(p2.id);
  assert.equal(notYours.type, 'ERROR');
  assert.equal(notYours.code, 'INVALID_PROPOSAL');
  const rej = await bob.reject(p2.id);
  assert.equal(rej.type, 'REJECT', JSON.stringify(rej));
  assert.equal(rej.status, 'rejected');
  await alice.expectType('REJECT', (m) => m.proposal_id === p2.id);

  // 3. integer amount, accept without payment code → dispute by the recipient.
  const p3 = await alice.propose(bob.agentId.slice(1), { task: 'émoji 🎉 task', amount: 100, currency: 'SOL' });
  assert.equal(p3.type, 'PROPOSAL', JSON.stringify(p3));
  await bob.expectType('PROPOSAL', (m) => m.id === p3.id);
  assert.equal((await bob.accept(p3.id)).type, 'ACCEPT');
  await alice.expectType('ACCEPT', (m) => m.proposal_id === p3.id);
  const dis = await bob.dispute(p3.id, 'not delivered | at all');
  assert.equal(dis.type, 'DISPUTE', JSON.stringify(dis));
  assert.equal(dis.status, 'disputed');
  assert.equal(dis.disputed_by, bob.agentId);
  const disIn = await alice.expectType('DISPUTE', (m) => m.proposal_id === p3.id);
  assert.equal(disIn.reason, 'not delivered | at all');

  // 4. a bad signature is refused; so is a proposal from an ephemeral agent.
  alice._send({ type: 'PROPOSAL', to: bob.agentId, task: 'forged', sig: sign(bob.identity.privkey, 'x') });
  await alice.expectError('INVALID_SIGNATURE');
  const eph = new Client030({ name: 'p-eph' });
  await eph.connect();
  eph._send({ type: 'PROPOSAL', to: bob.agentId, task: 'unsigned', sig: 'AAAA' });
  await eph.expectError('SIGNATURE_REQUIRED');
  eph.close();
  alice.close();
  bob.close();
});

t('identity files: workbench-written loads and signs in Node; Node-written loads in workbench', async () => {
  // workbench → Node
  const wbFile = path.join(tmp, 'wb.json');
  await run(['identity', '--generate', '--file', wbFile, '--name', 'wb-agent']);
  const wb = loadIdentity(wbFile);
  assert.deepEqual(Object.keys(wb).sort(), ['created', 'name', 'privkey', 'pubkey']);
  assert.equal(wb.name, 'wb-agent');
  assert.ok(!Number.isNaN(Date.parse(wb.created)));
  const derived = crypto.createPublicKey(crypto.createPrivateKey(wb.privkey)).export({ type: 'spki', format: 'pem' });
  assert.equal(derived, wb.pubkey, 'pubkey does not match privkey');
  const show = await run(['identity', '--show', '--file', wbFile]);
  assert.ok(show.includes(agentIdOf(wb.pubkey)), show);

  const viaWb = new Client030({ name: 'wb-agent', identity: wb });
  await viaWb.connect();
  assert.equal(viaWb.agentId, `@${agentIdOf(wb.pubkey)}`);
  const peer = new Client030({ name: 'peer' });
  await peer.connect();
  viaWb.dm(peer.agentId, 'node signs with a workbench key');
  const m = await peer.expectType('MSG', (m) => m.from === viaWb.agentId);
  assert.ok(verify(wb.pubkey, relayedText(m), m.sig));
  viaWb.close();

  // Node → workbench: workbench reads the file, reports the same id, and
  // its `send --identity` produces a signature Node verifies.
  const node = generateIdentity('node-agent');
  const nodeFile = path.join(tmp, 'node.json');
  saveIdentity(node, nodeFile);
  const show2 = await run(['identity', '--show', '--file', nodeFile]);
  // The same file left readable by others is refused with a fix to type.
  const loose = path.join(tmp, 'loose.json');
  fs.writeFileSync(loose, JSON.stringify(node, null, 2), { mode: 0o644 });
  fs.chmodSync(loose, 0o644);
  await assert.rejects(run(['identity', '--show', '--file', loose]), /chmod 600/);
  assert.ok(show2.includes(agentIdOf(node.pubkey)), show2);
  const out = await run(['send', url, peer.agentId, 'workbench signs with a node key', '--identity', nodeFile, ...caArgs]);
  const echoed = JSON.parse(out.trim().split('\n').pop());
  assert.equal(echoed.from, `@${agentIdOf(node.pubkey)}`);
  const got = await peer.expectType('MSG', (m) => m.content === 'workbench signs with a node key');
  assert.equal(got.from, `@${agentIdOf(node.pubkey)}`);
  assert.ok(got.sig, 'workbench send --identity did not sign');
  assert.ok(verify(node.pubkey, relayedText(got), got.sig), 'Node cannot verify workbench signature');
  peer.close();
});

t('a keyed 0.3.0 client signs every MSG, DMs included, and every one is delivered', async () => {
  const k = new Client030({ name: 'signer', identity: generateIdentity('signer') });
  const peer = new Client030({ name: 'signer-peer' });
  await k.connect();
  await peer.connect();
  await k.join('#agents');
  await peer.join('#agents');
  for (let i = 0; i < 3; i++) {
    const m = k.send('#agents', `signed ${i}`);
    assert.ok(m.sig && typeof m.ts === 'number', 'Client030 signs as 0.3.0 does');
    const got = await peer.expectType('MSG', (x) => x.content === `signed ${i}`);
    assert.ok(verify(k.pubkey, relayedText(got), got.sig));
    const d = k.dm(peer.agentId, `dm ${i}`);
    assert.ok(d.sig);
    const gotDm = await peer.expectType('MSG', (x) => x.content === `dm ${i}`);
    assert.equal(gotDm.from, k.agentId);
    assert.ok(verify(k.pubkey, relayedText(gotDm), gotDm.sig));
  }
  k.close();
  peer.close();
});

t('under --require-proof: a keyed 0.3.0 client gets a clear ERROR, a key-less one works', async () => {
  const strict = spawn(BIN, ['relay', '--ephemeral', '--host', '127.0.0.1', '--port', '0', '--name', 'strict', '--require-proof'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  try {
    const port = await new Promise((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => reject(new Error(`no listening line: ${buf}`)), 10000);
      strict.stderr.setEncoding('utf8');
      strict.stderr.on('data', (d) => {
        buf += d;
        if (!buf.includes('\n')) return;
        clearTimeout(timer);
        resolve(JSON.parse(buf.split('\n')[0]).port);
      });
    });
    const strictUrl = `ws://127.0.0.1:${port}`;
    const keyedClient = new Client030({ name: 'old-keyed', identity: generateIdentity('old-keyed') });
    keyedClient.url = strictUrl;
    await keyedClient.open();
    keyedClient._send({ type: 'IDENTIFY', name: 'old-keyed', pubkey: keyedClient.pubkey });
    // A 0.3.0 client ignores the CHALLENGE it cannot answer, and keeps
    // waiting for WELCOME or ERROR: it gets the ERROR, then the close.
    const e = await keyedClient.expect((m) => m.type === 'WELCOME' || m.type === 'ERROR', 'ERROR', 10000);
    assert.equal(e.type, 'ERROR', JSON.stringify(e));
    assert.equal(e.code, 'PROOF_REQUIRED');
    assert.match(e.message, /--require-proof/);
    await keyedClient.closed;
    const anon = new Client030({ name: 'old-anon' });
    anon.url = strictUrl;
    await anon.connect();
    assert.match(anon.agentId, /^@[a-z0-9]{8}$/);
    anon.close();
  } finally {
    strict.kill('SIGTERM');
  }
});
