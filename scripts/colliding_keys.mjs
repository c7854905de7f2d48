// Regenerates tests/vectors/colliding_keys.json: `node scripts/colliding_keys.mjs > tests/vectors/colliding_keys.json`.
// Test-only keys; never use them for anything else.
// Birthday search: two Ed25519 keys whose canonical SPKI PEMs hash (SHA-256)
// to the same first 32 bits, i.e. the same AgentChat id. Bounded: 3M keys max.
import crypto from 'node:crypto';
const seen = new Map();
for (let i = 0; i < 3_000_000; i++) {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519', {
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const id = crypto.createHash('sha256').update(publicKey).digest('hex').slice(0, 8);
  const prev = seen.get(id);
  if (prev && prev.pubkey !== publicKey) {
    const now = new Date().toISOString();
    const out = { agent_id: id, keys: [
      { name: 'collide-a', pubkey: prev.pubkey, privkey: prev.privkey, created: now },
      { name: 'collide-b', pubkey: publicKey, privkey: privateKey, created: now } ], tried: i + 1 };
    console.log(JSON.stringify(out, null, 2));
    process.exit(0);
  }
  seen.set(id, { pubkey: publicKey, privkey: privateKey });
}
console.error('no collision'); process.exit(1);
