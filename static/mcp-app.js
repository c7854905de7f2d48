// MCP Apps shim (io.modelcontextprotocol/ui): put first in the page's <head>
// by src/mcp/apps.rs when a host reads ui://workbench/<project>. In a host's
// sandboxed frame it speaks the extension's postMessage JSON-RPC with the
// host (ui/initialize, size changes, teardown), points the page's WebSocket
// at the project server, and sends the page's POSTs through the host as
// calls of the app-only tool workbench_app_post. Outside a frame it does nothing.
(function () {
  "use strict";
  var cfg = window.__WORKBENCH_APP__ || {};
  if (window.parent === window) return;
  var host = window.parent;
  var nextId = 1, pending = {};

  function post(msg) { host.postMessage(msg, "*"); }
  function rpc(method, params) {
    var id = nextId++;
    return new Promise(function (resolve, reject) {
      pending[id] = { resolve: resolve, reject: reject };
      post({ jsonrpc: "2.0", id: id, method: method, params: params || {} });
    });
  }
  function notify(method, params) { post({ jsonrpc: "2.0", method: method, params: params || {} }); }

  // A sandboxed frame without an origin has no localStorage: keep it in memory.
  try { window.localStorage.getItem("x"); } catch (e) {
    var mem = {};
    try {
      Object.defineProperty(window, "localStorage", { configurable: true, value: {
        getItem: function (k) { return Object.prototype.hasOwnProperty.call(mem, k) ? mem[k] : null; },
        setItem: function (k, v) { mem[k] = String(v); },
        removeItem: function (k) { delete mem[k]; }
      } });
    } catch (e2) { /* the page guards its storage calls */ }
  }

  // Where the project server is: known at once for ui://workbench/<project>;
  // for the tools' generic ui://workbench/app, from the tool call's input.
  var setServer;
  var server = new Promise(function (resolve) { setServer = resolve; });
  if (cfg.server) setServer(cfg);
  function learnProject(args) {
    var name = args && (args.project || args.name);
    if (cfg.server || !name) return;
    cfg.project = name;
    var label = document.getElementById("status-project");
    if (label) label.textContent = name;
    rpc("resources/read", { uri: "ui://workbench/" + name }).then(function (r) {
      var c = r && r.contents && r.contents[0];
      var w = c && c._meta && c._meta.workbench;
      if (w && w.server) { cfg.server = w.server; cfg.ws = w.ws; setServer(cfg); }
    });
  }

  window.addEventListener("message", function (ev) {
    if (ev.source !== host) return;
    var m = ev.data;
    if (!m || m.jsonrpc !== "2.0") return;
    if (m.id !== undefined && !m.method) {
      var p = pending[m.id];
      delete pending[m.id];
      if (p) { if (m.error) p.reject(new Error(m.error.message)); else p.resolve(m.result); }
      return;
    }
    if (m.method === "ui/notifications/tool-input") learnProject(m.params && m.params.arguments);
    if (m.id !== undefined) {
      // Host requests: teardown and ping need only an empty answer.
      post({ jsonrpc: "2.0", id: m.id, result: {} });
    }
  });

  // The page's WebSocket goes to the project server once it is known.
  var RealWS = window.WebSocket;
  function AppSocket(url) {
    var self = this;
    self._ws = null;
    server.then(function (s) {
      var path = String(url).replace(/^wss?:\/\/[^/]*/, "");
      var ws = new RealWS(s.ws + path);
      self._ws = ws;
      ["onopen", "onmessage", "onclose", "onerror"].forEach(function (k) {
        ws[k] = function (e) { if (typeof self[k] === "function") self[k](e); };
      });
    });
  }
  AppSocket.prototype.send = function (d) { if (this._ws) this._ws.send(d); };
  AppSocket.prototype.close = function (c, r) { if (this._ws) this._ws.close(c, r); };
  Object.defineProperty(AppSocket.prototype, "readyState", {
    get: function () { return this._ws ? this._ws.readyState : 0; }
  });
  AppSocket.CONNECTING = 0; AppSocket.OPEN = 1; AppSocket.CLOSING = 2; AppSocket.CLOSED = 3;
  window.WebSocket = AppSocket;

  // POSTs to the page server go through the host (the frame has no origin
  // the page server would take a CORS request from).
  function relay(path, body) {
    return server.then(function (s) {
      return rpc("tools/call", { name: "workbench_app_post",
        arguments: { project: s.project, path: path, body: String(body || "") } });
    });
  }
  var realFetch = window.fetch;
  window.fetch = function (url, opts) {
    if (typeof url === "string" && url.indexOf("/api/") === 0 && opts && opts.method === "POST") {
      return relay(url, opts.body).then(function (r) {
        if (!r || r.isError) throw new Error((r && r.content && r.content[0] && r.content[0].text) || "the host refused");
        var sc = r.structuredContent || {};
        return new Response(JSON.stringify(sc.body === undefined ? null : sc.body),
          { status: sc.status || 502, headers: { "Content-Type": "application/json" } });
      });
    }
    return realFetch.apply(this, arguments);
  };
  if (navigator.sendBeacon) {
    navigator.sendBeacon = function (url, body) {
      if (typeof url === "string" && url.indexOf("/api/") === 0) { relay(url, body); return true; }
      return false;
    };
  }

  // A host frame sandboxed without allow-forms blocks form submission
  // before the submit event fires. When a submit was asked for (a submit
  // button, Enter in a field) and no submit event followed, fire one: the
  // page's own handler takes it from there, as in a tab.
  var submitted = null;
  document.addEventListener("submit", function (e) { submitted = e.target; }, true);
  function ensureSubmit(form) {
    if (!form) return;
    submitted = null;
    setTimeout(function () {
      if (submitted !== form) form.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
    }, 0);
  }
  document.addEventListener("click", function (e) {
    var b = e.target && e.target.closest && e.target.closest("button, input[type=submit]");
    if (b && b.form && (b.type === "submit") && !e.defaultPrevented) ensureSubmit(b.form);
  }, true);
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.key === "Enter" && t && t.form && t.tagName === "INPUT") ensureSubmit(t.form);
  }, true);

  rpc("ui/initialize", {
    appInfo: { name: "workbench-page", version: "1" },
    appCapabilities: {},
    protocolVersion: "2026-01-26"
  }).then(function () {
    notify("ui/notifications/initialized");
    var last = "";
    function size() {
      var d = document.documentElement;
      var s = { width: d.scrollWidth, height: d.scrollHeight };
      var k = s.width + "x" + s.height;
      if (k !== last) { last = k; notify("ui/notifications/size-changed", s); }
    }
    if (window.ResizeObserver) new ResizeObserver(size).observe(document.documentElement);
    size();
  }, function () { /* not in an MCP Apps host: the page works as a plain frame */ });
})();
