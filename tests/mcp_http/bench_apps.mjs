// Push-to-DOM: the same workbench_state pushes (sent over MCP HTTP) timed
// to the DOM of a plain browser tab and of the page inline in an MCP Apps
// host frame, both open at once. Run by scripts/bench_mcp_http.sh.
import { start } from "./lib.mjs";

const N = Number(process.env.WORKBENCH_BENCH_PUSHES || 60);
const env = await start();
setTimeout(() => { console.error("bench watchdog"); process.exit(1); }, 300_000).unref();
try {
  const made = await env.call("workbench_scaffold", { name: "bench" });
  await env.call("workbench_state", { project: "bench", template: '<p id="v">start</p>' });
  const tab = await env.browser.newPage();
  await tab.goto(made.url);
  await tab.locator("#v").waitFor();
  const { frame, host } = await env.openApp("workbench_state", { project: "bench", template: '<p id="v">start</p>' });
  // Each viewer notes when #v shows each value (wall clock, as Node's).
  const observe = () => {
    window.__seen = {};
    new MutationObserver(() => {
      const v = document.getElementById("v");
      if (v && !(v.textContent in window.__seen)) window.__seen[v.textContent] = Date.now();
    }).observe(document.body, { childList: true, subtree: true, characterData: true });
  };
  const appFrame = host.frames().find((f) => f !== host.mainFrame());
  await tab.evaluate(observe);
  await appFrame.evaluate(observe);
  const sent = {};
  for (let i = 0; i < N; i++) {
    const v = `p-${i}`;
    sent[v] = Date.now();
    await env.call("workbench_state", { project: "bench", template: `<p id="v">${v}</p>` });
    await new Promise((r) => setTimeout(r, 30));
  }
  await new Promise((r) => setTimeout(r, 500));
  const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
  const lat = async (target) => {
    const seen = await target.evaluate(() => window.__seen);
    return Object.keys(sent).filter((k) => k in seen).map((k) => seen[k] - sent[k]);
  };
  const t = await lat(tab), f = await lat(appFrame);
  console.log(`# push to DOM (MCP HTTP call sent -> value in the DOM), ${N} pushes, both viewers at once`);
  console.log(`plain tab (baseline):  median ${median(t)} ms  (${t.length}/${N} seen)`);
  console.log(`MCP Apps frame:        median ${median(f)} ms  (${f.length}/${N} seen)`);
  console.log(`ratio frame/tab:       ${(median(f) / Math.max(median(t), 1)).toFixed(2)}x`);
} finally {
  await env.close();
}
