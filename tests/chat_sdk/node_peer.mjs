// A 0.3.0-style AgentChat client (the `ws` library, as 0.3.0 uses, from
// tests/compat's node_modules) in the same channel as MCP agents, for
// tests/chat_mcp.rs. It identifies ephemerally (pubkey: null, as 0.3.0
// does), joins the channel, prints {"event":"ready","agent_id"}, waits for
// "from mcp", answers "from node", waits for "ack node", prints
// {"event":"done"} and exits 0. Bounded by a deadline; failures exit 1.
//   node node_peer.mjs <relay url> <#channel>
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'compat', 'package.json'));
const WebSocket = require('ws');

const [url, channel] = process.argv.slice(2);
const fail = (why) => {
  console.error(`node_peer: ${why}`);
  process.exit(1);
};
setTimeout(() => fail('deadline of 60 s passed'), 60000).unref();

const ws = new WebSocket(url);
const send = (m) => ws.send(JSON.stringify(m));
const seen = [];
let this_id = null;
ws.on('error', (e) => fail(`socket error ${e.message}`));
ws.on('close', () => fail('closed by the relay'));
ws.on('open', () => send({ type: 'IDENTIFY', name: 'node030', pubkey: null }));
ws.on('message', (data) => {
  const m = JSON.parse(data.toString());
  if (m.type === 'WELCOME') {
    this_id = m.agent_id;
    send({ type: 'JOIN', channel });
  } else if (m.type === 'JOINED' && m.channel === channel) {
    console.log(JSON.stringify({ event: 'ready', agent_id: this_id }));
  } else if (m.type === 'MSG' && m.to === channel && m.from !== this_id) {
    seen.push(m.content);
    if (m.content === 'from mcp') send({ type: 'MSG', to: channel, content: 'from node' });
    if (m.content === 'ack node') {
      console.log(JSON.stringify({ event: 'done', seen, from: m.from }));
      ws.removeAllListeners('close');
      ws.close();
      setTimeout(() => process.exit(0), 100);
    }
  } else if (m.type === 'ERROR') {
    fail(`relay error ${m.code}: ${m.message}`);
  }
});
