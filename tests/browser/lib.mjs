// Shared by the browser tests and scripts/bench_browser.mjs: the binary's
// path, Chromium's launch flags, and a `workbench mcp` client over pipes.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.WORKBENCH_BIN || join(root, "target/debug/workbench");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

export const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
];

/** A `workbench mcp` child spoken to over pipes, like an AI CLI. */
export class Mcp {
  constructor(home, extraEnv = {}) {
    this.proc = spawn(BIN, ["mcp"], {
      env: { HOME: home, PATH: "/usr/bin:/bin", WORKBENCH_HOME: home, WORKBENCH_SERVE_HOST: "127.0.0.1", WORKBENCH_HOST: "127.0.0.1",
             // Pings every 60 s: a closed tab must be noticed by its goodbye beacon.
             WORKBENCH_PING_SECS: "60", ...extraEnv },
      stdio: ["pipe", "pipe", "inherit"],
    });
    this.nextId = 1;
    this.pending = new Map();
    createInterface({ input: this.proc.stdout }).on("line", (line) => {
      const msg = JSON.parse(line);
      if (msg.id !== undefined && this.pending.has(msg.id)) {
        this.pending.get(msg.id)(msg);
        this.pending.delete(msg.id);
      }
    });
  }
  request(method, params, timeoutMs = 60_000) {
    const id = this.nextId++;
    return new Promise((resolveP, reject) => {
      const t = setTimeout(() => reject(new Error(`no answer to ${method} in ${timeoutMs} ms`)), timeoutMs);
      this.pending.set(id, (m) => { clearTimeout(t); resolveP(m); });
      this.proc.stdin.write(JSON.stringify({ jsonrpc: "2.0", id, method, params }) + "\n");
    });
  }
  async call(name, args) {
    const r = await this.request("tools/call", { name, arguments: args });
    assert.ok(r.result, `tools/call ${name} failed: ${JSON.stringify(r)}`);
    assert.equal(r.result.isError, false, `${name}: ${r.result.content?.[0]?.text}`);
    return r.result.structuredContent;
  }
  close() { this.proc.stdin.end(); }
}

