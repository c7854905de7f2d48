// A loopback proxy that adds `Authorization: Bearer <token>` and passes
// everything else through unchanged (Host and Origin included, streamed
// both ways). The conformance suite cannot send a header of its own, and
// `workbench mcp --http` refuses every request without the token.
// usage: node auth_proxy.mjs TARGET_PORT TOKEN   (prints "proxy PORT")
import http from "node:http";

const [targetPort, token] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true });
const server = http.createServer((req, res) => {
  const headers = { ...req.headers, authorization: `Bearer ${token}` };
  const up = http.request(
    { host: "127.0.0.1", port: Number(targetPort), method: req.method, path: req.url, headers, agent },
    (r) => { res.writeHead(r.statusCode, r.headers); r.pipe(res); },
  );
  up.on("error", (e) => { res.writeHead(502); res.end(String(e)); });
  req.pipe(up);
  res.on("close", () => up.destroy());
});
server.listen(0, "127.0.0.1", () => console.log(`proxy ${server.address().port}`));
// Bounded: the proxy never outlives a test run.
setTimeout(() => process.exit(0), 10 * 60 * 1000).unref();
