// Cross-implementation vectors for identities and signatures (issue 7).
//
// Node's own crypto plays AgentChat 0.3.0 here: it writes the identity file
// the way 0.3.0 does (SPKI / PKCS#8 PEM, `JSON.stringify(data, null, 2)`),
// builds each client message the way the 0.3.0 client does, and signs the
// exact text 0.3.0 signs. Tests in src/relay/signing.rs check that workbench
// reproduces every signed text and signature byte for byte.
//
// usage: node scripts/identity_vectors.mjs OUT_DIR [WORKBENCH_IDENTITY]
// With WORKBENCH_IDENTITY (a file written by `workbench identity --generate`),
// Node also loads that file and signs the same messages with it.
// Run through scripts/identity_vectors.sh, which regenerates everything.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const [outDir, workbenchIdentity] = process.argv.slice(2);
if (!outDir) {
  console.error('usage: node scripts/identity_vectors.mjs OUT_DIR [WORKBENCH_IDENTITY]');
  process.exit(2);
}

const agentId = (pem) => crypto.createHash('sha256').update(pem).digest('hex').substring(0, 8);
const fingerprint = (pem) => crypto.createHash('sha256').update(pem).digest('hex').substring(0, 16);
const sign = (privkey, text) => crypto.sign(null, Buffer.from(text), crypto.createPrivateKey(privkey)).toString('base64');

// The signed texts, as the protocol page (AGENTCHAT.md, "What is signed") gives them.
const proposalText = (p) => [
  p.to, p.task, p.amount || '', p.currency || '', p.payment_code || '', p.expires || '',
].join('|');
const acceptText = (m) => `ACCEPT|${m.proposal_id}|${m.payment_code || ''}`;
const rejectText = (m) => `REJECT|${m.proposal_id}|${m.reason || ''}`;
const completeText = (m) => `COMPLETE|${m.proposal_id}|${m.proof || ''}`;
const disputeText = (m) => `DISPUTE|${m.proposal_id}|${m.reason}`;
const msgText = (m) => JSON.stringify({ to: m.to, content: m.content, ts: m.ts });

// What goes on the wire: undefined fields vanish, as with ws.send(JSON.stringify(msg)).
const wire = (m) => JSON.parse(JSON.stringify(m));

const TS = 1764000000123;
const PID = 'prop_mieq3k2a_1a2b3c4d';
const contents = [
  'hello',
  '',
  'quote " backslash \\ slash / tab\t newline\n cr\r bs\b ff\f',
  'controls \u0000 \u0001 \u001f del \u007f',
  'héllo 世界 🎉 ünïcödé',
  'separators \u2028 \u2029 end',
  '</script><!-- & \' -->',
  'pipes | in | content',
];
const amounts = [undefined, 100, 1.5, 0.1 + 0.2, 1e21, 1e-7, 0, 123456789.125, -2.5];

function cases() {
  const out = [];
  for (const [i, content] of contents.entries()) {
    out.push({ type: 'MSG', to: i % 2 ? '@k3f9x2ab' : '#general', content, ts: TS + i });
  }
  for (const [i, amount] of amounts.entries()) {
    out.push({
      type: 'PROPOSAL', to: '@k3f9x2ab', task: i === 0 ? 'review | the PR' : `task ${i}`,
      amount, currency: amount === undefined ? undefined : 'USDC',
      payment_code: i % 3 === 0 ? undefined : 'bc1qexample', terms: i % 2 ? 'net 30' : undefined,
      expires: i === 4 ? undefined : (i === 5 ? 0 : 300),
    });
  }
  out.push({ type: 'PROPOSAL', to: '@k3f9x2ab', task: 'émoji 🎉 task' });
  out.push({ type: 'ACCEPT', proposal_id: PID, payment_code: 'bc1qpay' });
  out.push({ type: 'ACCEPT', proposal_id: PID, payment_code: null });
  out.push({ type: 'REJECT', proposal_id: PID, reason: 'too expensive' });
  out.push({ type: 'REJECT', proposal_id: PID, reason: null });
  out.push({ type: 'COMPLETE', proposal_id: PID, proof: 'https://example.com/pr/1' });
  out.push({ type: 'COMPLETE', proposal_id: PID, proof: null });
  out.push({ type: 'DISPUTE', proposal_id: PID, reason: 'not delivered | at all' });
  return out;
}

const TEXT = {
  MSG: msgText, PROPOSAL: proposalText, ACCEPT: acceptText, REJECT: rejectText,
  COMPLETE: completeText, DISPUTE: disputeText,
};

function signAll(privkey) {
  return cases().map((m) => {
    const signed = TEXT[m.type](m);
    const sig = sign(privkey, signed);
    return { message: wire({ ...m, sig }), signed, sig };
  });
}

function write(name, value) {
  fs.writeFileSync(path.join(outDir, name), JSON.stringify(value, null, 2) + '\n');
}

fs.mkdirSync(outDir, { recursive: true });

// 1. A Node identity, saved exactly as 0.3.0's Identity.save() writes it.
const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519', {
  publicKeyEncoding: { type: 'spki', format: 'pem' },
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
});
const identity = { name: 'node-vector', pubkey: publicKey, privkey: privateKey, created: new Date().toISOString() };
fs.writeFileSync(path.join(outDir, 'node_identity.json'), JSON.stringify(identity, null, 2));
write('node_vectors.json', {
  generator: `node ${process.version} crypto`,
  identity_file: 'node_identity.json',
  agent_id: agentId(identity.pubkey),
  fingerprint: fingerprint(identity.pubkey),
  signatures: signAll(identity.privkey),
});

// 2. How JavaScript prints numbers (String(x)), keyed by the IEEE-754 bits.
const numbers = [0, -0, 1, -1, 100, 1.5, 0.1, 0.2, 0.1 + 0.2, 1 / 3, 2 / 3, 1e21, 1e20, 123e18, 1e-7, 1e-6,
  1.5e-7, 0.000001234, 5e-324, Number.MAX_VALUE, Number.MIN_VALUE, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2,
  2 ** 64, 1e300, 1.7976931348623157e308, 4.35, 0.3, 299792458, 1234567890123456789, 9007199254740993,
  999999999999999900000, 1e-5, 12345.678, -0.0001, 3.14159e-10, 1e100, 100000000000000000000];
const view = new DataView(new ArrayBuffer(8));
let seed = 0x2545f491;
const rnd32 = () => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return seed >>> 0; };
for (let i = 0; i < 3000; i++) {
  view.setUint32(0, rnd32());
  view.setUint32(4, rnd32());
  const x = view.getFloat64(0);
  if (Number.isFinite(x)) numbers.push(x);
}
for (let i = 0; i < 1000; i++) numbers.push(Math.round(rnd32() / 7) / 100, rnd32() * 1e3, rnd32() / 1e9);
write('js_numbers.json', numbers.map((x) => {
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0).toString(16).padStart(16, '0');
  return [bits, String(x)];
}));

// 3. A file written by workbench loads here, and Node signs with its key.
if (workbenchIdentity) {
  const wb = JSON.parse(fs.readFileSync(workbenchIdentity, 'utf-8'));
  const derived = crypto.createPublicKey(crypto.createPrivateKey(wb.privkey)).export({ type: 'spki', format: 'pem' });
  if (derived !== wb.pubkey) throw new Error('workbench identity: pubkey does not match privkey');
  write('node_signs_workbench.json', {
    generator: `node ${process.version} crypto`,
    identity_file: path.basename(workbenchIdentity),
    agent_id: agentId(wb.pubkey),
    signatures: signAll(wb.privkey),
  });
}
