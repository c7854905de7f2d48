//! The hub as one replica of a cluster (`--cluster`, issue 14 §2;
//! docs/relay-cluster.md). Every node applies the same records in the
//! same order (the Redis stream, `relay/cluster.rs`), so every node holds
//! the same channels, members, replay rings, invites, proposals and key
//! bindings, and delivers to the members connected to it.
//!
//! A request of an identified agent is checked where it arrives for what
//! is that node's own business (rate limits, a MSG's signature and clock
//! window: `precheck`), then published as a `req` record; applying it runs
//! the ordinary handler (`State::dispatch`) on every node, with the clock
//! set to the record's, so everything it decides is decided alike.
//! Connections of other nodes are mirrored as connections whose outbox
//! discards (`NullQueue`): only the node holding a socket writes to it.
//!
//! Records (JSON, the stream field `r`; `n` is the writer's session):
//! - `hello` — a node (re)started; older sessions of its node id are dead.
//! - `admit` — connection `c` of node `n` asks to be agent `id`: the first
//!   record for an id wins (the duplicate-identity rule, cluster-wide).
//! - `req` — a client frame `m` of an identified agent, at time `t`.
//! - `gone` — that connection ended.
//! - `beat` — node `n` is alive; `dead` — node `d` is not (any survivor
//!   writes it once `d` has been silent for `cluster::DEAD_MS`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::{Agent, Conn, ConnId, Effects, ErrorCode, Hub, HubConfig, Refusal, State, TokenBucket};
use crate::relay::cluster::{self, Link, Out};
use crate::relay::outbox::{Outgoing, QueueFull, SendQueue};
use crate::relay::proposal_wire::ProposalRequest;
use crate::relay::protocol::{AgentId, AgentName, ClientMsg, Target};
use crate::relay::store::Store;
use crate::relay::trust::{self, Binding, KeyBytes};
use crate::util::now_ms;

/// The outbox of a connection held by another node: discards.
pub struct NullQueue;

impl SendQueue for NullQueue {
    fn try_send(&self, _out: Outgoing) -> Result<(), QueueFull> {
        Ok(())
    }
}

/// What one node knows of the others.
pub(super) struct Replica {
    session: Arc<str>,
    /// (session, its connection id) → our mirror of it.
    remote: HashMap<(Arc<str>, ConnId), ConnId>,
    nodes: HashMap<Arc<str>, Seen>,
    /// While a record is applied: its time, so every node decides alike.
    clock: Option<u64>,
    /// While applying a departure: removals are final (no ghost).
    final_removal: bool,
    /// When the reader last (re)connected: silence before that is Redis's
    /// fault, not the node's.
    connected_at: u64,
    /// Records applied since the last snapshot point (every node counts
    /// the same records, so they agree on the points).
    since_snapshot: usize,
    snapshot_every: usize,
}

struct Seen {
    node: String,
    /// Unix ms of its last record (catch-up: the record's own time).
    last: u64,
    mirrors: usize,
    declared: bool,
}

/// A record's fields (absent ones empty). Read from a `serde_json::Value`
/// rather than derived: one less deserializer in the binary.
#[derive(Default)]
struct Rec {
    k: String,
    n: String,
    c: ConnId,
    t: u64,
    m: Option<String>,
    pid: Option<String>,
    id: Option<String>,
    name: Option<String>,
    pem: Option<String>,
    proven: bool,
    node: Option<String>,
    d: Option<String>,
}

impl Rec {
    fn parse(body: &str) -> Option<Rec> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        let s = |k: &str| v[k].as_str().map(str::to_string);
        Some(Rec {
            k: s("k")?,
            n: s("n")?,
            c: v["c"].as_u64().unwrap_or(0),
            t: v["t"].as_u64().unwrap_or(0),
            m: s("m"),
            pid: s("pid"),
            id: s("id"),
            name: s("name"),
            pem: s("pem"),
            proven: v["proven"] == true,
            node: s("node"),
            d: s("d"),
        })
    }
}

fn unavailable() -> Refusal {
    Refusal::new(
        ErrorCode::ClusterUnavailable,
        "This relay node cannot reach the cluster's Redis right now; nothing was done \
         (try again shortly)",
    )
}

impl Hub {
    /// A cluster node's hub: state comes from the stream (`apply`).
    pub fn clustered(
        cfg: HubConfig,
        seed: u64,
        store: Box<dyn Store>,
        link: Link,
        snapshot_every: usize,
    ) -> Hub {
        let mut hub = Hub::with_store(cfg, seed, store, Vec::new());
        {
            let st = hub.state.get_mut().unwrap_or_else(|e| e.into_inner());
            st.cluster = Some(Replica {
                session: link.session.clone(),
                remote: HashMap::new(),
                nodes: HashMap::new(),
                clock: None,
                final_removal: false,
                connected_at: now_ms(),
                since_snapshot: 0,
                snapshot_every,
            });
        }
        hub.link = Some(link);
        hub
    }

    /// Publishes what a handler queued, then does the rest of `fx`.
    pub(super) fn finish(&self, mut fx: Effects) {
        let outs = std::mem::take(&mut fx.publish);
        fx.finish();
        let Some(link) = &self.link else {
            return;
        };
        for out in outs {
            if let Err(out) = link.publish(out) {
                if let Some(id) = out.origin {
                    self.unpublished(id);
                }
            }
        }
    }

    /// One client frame (its text and its parse). Outside a cluster, or for
    /// a connection not yet identified, handled here at once; otherwise
    /// checked here and published, and handled as the stream brings it.
    #[inline(never)]
    pub fn handle_text(&self, id: ConnId, text: &str, msg: ClientMsg) {
        if self.link.is_none() {
            return self.handle(id, msg);
        }
        let mut fx = Effects::default();
        {
            let mut st = self.lock();
            let replicated = match st.conns.get(&id) {
                None => return,
                Some(c) if c.ghost => return,
                Some(c) => c.agent.is_some() || c.admitting.is_some(),
            };
            if !replicated {
                drop(st);
                return self.handle(id, msg);
            }
            let kind = msg.kind();
            match st.precheck(&self.cfg, id, &msg) {
                Ok(()) => {
                    let t = now_ms();
                    let pid = matches!(
                        &msg,
                        ClientMsg::Proposal {
                            req: ProposalRequest::Propose { .. },
                            ..
                        }
                    )
                    .then(|| crate::relay::proposals::new_proposal_id(t));
                    let session = st.session();
                    let mut body = record("req", &session, t);
                    body.push_str(&format!(r#","c":{id},"m":{}"#, js(text)));
                    if let Some(pid) = pid {
                        body.push_str(&format!(r#","pid":{}"#, js(&pid)));
                    }
                    body.push('}');
                    fx.publish.push(Out {
                        body,
                        origin: Some(id),
                        retry: false,
                    });
                }
                Err(r) => st.refuse(id, kind, &r, &mut fx),
            }
            st.reap(&mut fx);
        }
        self.finish(fx);
    }

    /// A request of connection `id` did not reach Redis: it is told.
    pub fn unpublished(&self, id: ConnId) {
        let mut fx = Effects::default();
        {
            let mut st = self.lock();
            let Some(c) = st.conns.get_mut(&id) else {
                return;
            };
            // An IDENTIFY that never left: the connection may try again.
            c.admitting = None;
            st.refuse(id, "cluster", &unavailable(), &mut fx);
            st.reap(&mut fx);
        }
        self.finish(fx);
    }

    /// For /health: false while Redis is unreachable.
    pub fn healthy(&self) -> bool {
        self.link.as_ref().is_none_or(Link::is_up)
    }

    /// The reader reconnected: count silence from now.
    pub fn cluster_connected(&self) {
        if let Some(r) = self.lock().cluster.as_mut() {
            r.connected_at = now_ms();
        }
    }

    /// This run's session name (`<node-id>/<random>`), for the log.
    pub fn session_name(&self) -> Option<String> {
        self.link.as_ref().map(|l| l.session.to_string())
    }

    /// The `hello` record a starting node writes.
    pub fn hello_record(&self) -> Option<String> {
        let link = self.link.as_ref()?;
        let mut body = record("hello", &link.session, now_ms());
        body.push_str(&format!(r#","node":{}}}"#, js(&link.node)));
        Some(body)
    }

    /// The record a node writes as it stops cleanly: its agents are gone.
    pub fn farewell_record(&self) -> Option<String> {
        let link = self.link.as_ref()?;
        let mut body = record("dead", &link.session, now_ms());
        body.push_str(&format!(r#","d":{}}}"#, js(&link.session)));
        Some(body)
    }

    /// The heartbeat: a beat, and a `dead` record for each node that has
    /// been silent (while we could hear it) for `DEAD_MS`.
    pub fn cluster_tick(&self) {
        let Some(link) = &self.link else {
            return;
        };
        let now = now_ms();
        let mut outs = vec![record("beat", &link.session, now) + "}"];
        if link.is_up() {
            let mut st = self.lock();
            if let Some(r) = st.cluster.as_mut() {
                let since = r.connected_at;
                for (s, seen) in r.nodes.iter_mut() {
                    if *s == r.session || seen.declared || seen.mirrors == 0 {
                        continue;
                    }
                    if now.saturating_sub(seen.last.max(since)) > cluster::DEAD_MS {
                        seen.declared = true;
                        let mut body = record("dead", &r.session, now);
                        body.push_str(&format!(r#","d":{},"node":{}}}"#, js(s), js(&seen.node)));
                        outs.push(body);
                    }
                }
            }
        }
        for body in outs {
            let _ = link.publish(Out {
                body,
                origin: None,
                retry: false,
            });
        }
    }

    /// Applies one stream record (`catchup`: read at start, before
    /// listening). A record that does not parse is skipped.
    pub fn apply(&self, body: &str, catchup: bool) {
        let Some(rec) = Rec::parse(body) else {
            crate::util::log_event("cluster_record_skipped", json!({"bytes": body.len()}));
            return;
        };
        let mut fx = Effects::default();
        {
            let mut st = self.lock();
            st.apply(&self.cfg, rec, catchup, &mut fx);
            st.reap(&mut fx);
        }
        self.finish(fx);
    }
}

impl State {
    /// The time decisions are made at: the record's while applying one.
    pub(super) fn now(&self) -> u64 {
        self.cluster
            .as_ref()
            .and_then(|r| r.clock)
            .unwrap_or_else(now_ms)
    }

    /// True while a stream record is applied.
    pub(super) fn applying(&self) -> bool {
        self.cluster.as_ref().is_some_and(|r| r.clock.is_some())
    }

    fn session(&self) -> Arc<str> {
        self.cluster
            .as_ref()
            .map_or_else(|| Arc::from(""), |r| r.session.clone())
    }

    /// In a cluster (and not applying), admission waits for the stream.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn admit_or_request(
        &mut self,
        cfg: &HubConfig,
        id: ConnId,
        aid: AgentId,
        name: AgentName,
        keyed: Option<(String, KeyBytes)>,
        proven: bool,
        fx: &mut Effects,
    ) {
        if self.cluster.is_some() && !self.applying() {
            self.request_admit(id, aid, name, keyed, proven, fx);
        } else {
            self.admit(cfg, id, aid, name, keyed, proven, fx);
        }
    }

    /// Publishes an `admit` for connection `id`; WELCOME (or the refusal)
    /// comes when the stream brings it back.
    pub(super) fn request_admit(
        &mut self,
        id: ConnId,
        aid: AgentId,
        name: AgentName,
        keyed: Option<(String, KeyBytes)>,
        proven: bool,
        fx: &mut Effects,
    ) {
        let session = self.session();
        let mut body = record("admit", &session, now_ms());
        body.push_str(&format!(
            r#","c":{id},"id":{},"name":{},"proven":{proven}"#,
            js(aid.as_str()),
            js(name.as_str())
        ));
        if let Some((pem, _)) = &keyed {
            body.push_str(&format!(r#","pem":{}"#, js(pem)));
        }
        body.push('}');
        if let Some(c) = self.conns.get_mut(&id) {
            c.admitting = Some(Box::new(Agent::new(aid, name, keyed, proven)));
        }
        fx.publish.push(Out {
            body: body.to_string(),
            origin: Some(id),
            retry: false,
        });
    }

    /// What the arriving node checks before it publishes a request: its
    /// own rate limits, and a keyed MSG's signature and clock window
    /// (verified once, here, not on every node).
    pub(super) fn precheck(
        &mut self,
        cfg: &HubConfig,
        id: ConnId,
        msg: &ClientMsg,
    ) -> Result<(), Refusal> {
        let pubkey = self
            .conns
            .get(&id)
            .and_then(|c| c.agent.as_ref().or(c.admitting.as_deref()))
            .and_then(|a| a.pubkey.clone());
        match msg {
            ClientMsg::Msg {
                to,
                content,
                sig,
                ts,
            } => {
                self.charge(cfg, id, true)?;
                if let Some(pem) = &pubkey {
                    self.check_signed(cfg, pem, to, content, sig.as_deref(), *ts)?;
                }
                if let Target::Channel(name) = to {
                    let rate = cfg.quotas.channel_rate;
                    if let Some(ch) = self.channels.get_mut(name) {
                        if !ch.bucket.try_take(Instant::now(), rate) {
                            return Err(super::rate_limited(&format!(
                                "{} as a whole",
                                name.as_str()
                            )));
                        }
                    }
                }
                Ok(())
            }
            ClientMsg::Invite { .. } | ClientMsg::Proposal { .. } => self.charge(cfg, id, true),
            ClientMsg::CreateChannel { .. } => {
                let now = Instant::now();
                let per_hour = cfg.quotas.channels_per_hour;
                let agent = self
                    .conns
                    .get(&id)
                    .and_then(|c| c.agent.as_ref().or(c.admitting.as_deref()))
                    .map(|a| a.id.clone());
                if let Some(a) = agent {
                    if !self.creates_by_agent.try_take(&a, now) {
                        return Err(super::rate_limited(&format!(
                            "at most {per_hour} channels per agent per hour"
                        )));
                    }
                }
                let peer = self.conns.get(&id).and_then(|c| c.peer);
                if let Some(ip) = peer {
                    if !self.creates_by_ip.try_take(&ip, now) {
                        return Err(super::rate_limited(&format!(
                            "at most {} channels per client address per hour",
                            per_hour * 4
                        )));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `reap`'s cluster rule: a local, identified connection that ends for
    /// a local reason turns silent (a ghost) and its departure is
    /// published; it is removed when that record is applied, at the same
    /// place in the order on every node. Returns true if it was kept.
    pub(super) fn ghost_instead(&mut self, id: ConnId, reason: &str, fx: &mut Effects) -> bool {
        let Some(r) = self.cluster.as_ref() else {
            return false;
        };
        if r.final_removal {
            return false;
        }
        let session = r.session.clone();
        let Some(c) = self.conns.get_mut(&id) else {
            return false;
        };
        if c.origin.is_some() {
            return false;
        }
        if c.ghost {
            return true;
        }
        if c.agent.is_none() && c.admitting.is_none() {
            return false;
        }
        c.ghost = true;
        c.outbox = Box::new(NullQueue);
        if let Some(s) = c.stream.take() {
            if !fx.kicked.contains(&id) {
                fx.shutdown.push(s);
            }
        }
        fx.logs.push((
            "disconnect",
            json!({"conn": id, "agent": c.agent.as_ref().or(c.admitting.as_deref()).map(|a| a.id.as_str()),
                   "name": c.agent.as_ref().map(|a| a.name.as_str()), "reason": reason,
                   "refusals": c.refusals}),
        ));
        fx.publish.push(Out {
            body: record("gone", &session, now_ms()) + &format!(r#","c":{id}}}"#),
            origin: None,
            retry: true,
        });
        true
    }

    /// A mirror is removed: forget its key.
    pub(super) fn forget_mirror(&mut self, origin: &Option<(Arc<str>, ConnId)>) {
        let (Some(r), Some(o)) = (self.cluster.as_mut(), origin) else {
            return;
        };
        r.remote.remove(o);
        if let Some(seen) = r.nodes.get_mut(&o.0) {
            seen.mirrors = seen.mirrors.saturating_sub(1);
        }
    }

    /// Our connection for (session, id): our own, or our mirror of it.
    fn resolve(&self, session: &str, c: ConnId) -> Option<(ConnId, bool)> {
        let r = self.cluster.as_ref()?;
        if *r.session == *session {
            return self.conns.contains_key(&c).then_some((c, true));
        }
        r.remote.get(&(Arc::from(session), c)).map(|&m| (m, false))
    }

    fn apply(&mut self, cfg: &HubConfig, rec: Rec, catchup: bool, fx: &mut Effects) {
        let Some(r) = self.cluster.as_mut() else {
            return;
        };
        let session: Arc<str> = match r.nodes.get_key_value(rec.n.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(rec.n.as_str()),
        };
        let seen = r.nodes.entry(session.clone()).or_insert(Seen {
            node: rec.node.clone().unwrap_or_else(|| node_of(&rec.n)),
            last: 0,
            mirrors: 0,
            declared: false,
        });
        seen.last = if catchup { rec.t } else { now_ms() };
        let t = if rec.t > 0 { rec.t } else { now_ms() };
        match rec.k.as_str() {
            "req" => self.apply_req(cfg, &session, rec, t, fx),
            "admit" => self.apply_admit(cfg, &session, rec, t, fx),
            "gone" => {
                if let Some((id, _)) = self.resolve(&session, rec.c) {
                    self.remove_final(vec![(id, "gone")], fx);
                }
            }
            "hello" => {
                // A restarted node: its earlier sessions are over.
                let node = rec.node.unwrap_or_else(|| node_of(&rec.n));
                let old: Vec<Arc<str>> = self
                    .cluster
                    .as_ref()
                    .map(|r| {
                        r.nodes
                            .iter()
                            .filter(|(s, seen)| **s != session && seen.node == node)
                            .map(|(s, _)| s.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                for s in old {
                    self.node_dead(&s, fx);
                }
            }
            "dead" => {
                if let Some(d) = rec.d {
                    self.node_dead(&Arc::from(d.as_str()), fx);
                }
            }
            _ => {}
        }
    }

    fn remove_final(&mut self, ids: Vec<(ConnId, &'static str)>, fx: &mut Effects) {
        fx.doomed.extend(ids);
        if let Some(r) = self.cluster.as_mut() {
            r.final_removal = true;
        }
        self.reap(fx);
        if let Some(r) = self.cluster.as_mut() {
            r.final_removal = false;
        }
    }

    /// Every agent of session `s` is gone. If `s` is this node (it was cut
    /// off long enough for the others to give up on it), its clients are
    /// told and closed: they reconnect and are admitted again.
    fn node_dead(&mut self, s: &Arc<str>, fx: &mut Effects) {
        let Some(r) = self.cluster.as_mut() else {
            return;
        };
        let mine = r.session == *s;
        if let Some(seen) = r.nodes.get_mut(s) {
            seen.declared = true;
        }
        let ids: Vec<ConnId> = if mine {
            self.conns
                .iter()
                .filter(|(_, c)| c.origin.is_none() && (c.agent.is_some() || c.ghost))
                .map(|(id, _)| *id)
                .collect()
        } else {
            r.remote
                .iter()
                .filter(|((sess, _), _)| sess == s)
                .map(|(_, m)| *m)
                .collect()
        };
        if mine && !ids.is_empty() {
            let why = Refusal::new(
                ErrorCode::ClusterUnavailable,
                "This relay node was cut off from the cluster and its sessions were ended; \
                 reconnect",
            );
            for id in &ids {
                self.refuse(*id, "cluster", &why, fx);
                self.send(*id, Outgoing::Close(1012, "node left the cluster"), fx);
                fx.kicked.push(*id);
            }
        }
        if !ids.is_empty() {
            fx.logs.push((
                "cluster_node_dead",
                json!({"session": &**s, "agents": ids.len(), "this_node": mine}),
            ));
        }
        self.remove_final(ids.into_iter().map(|id| (id, "node dead")).collect(), fx);
    }

    fn apply_req(
        &mut self,
        cfg: &HubConfig,
        session: &Arc<str>,
        rec: Rec,
        t: u64,
        fx: &mut Effects,
    ) {
        let Some((id, local)) = self.resolve(session, rec.c) else {
            return;
        };
        let Some(text) = rec.m else { return };
        let Ok(msg) = ClientMsg::parse(&text) else {
            return;
        };
        // Reads and PING answer only their sender.
        if !local
            && matches!(
                msg,
                ClientMsg::ListAgents { .. } | ClientMsg::ListChannels | ClientMsg::Ping
            )
        {
            return;
        }
        let kind = msg.kind();
        if let Some(r) = self.cluster.as_mut() {
            r.clock = Some(t);
        }
        self.proposals.next_id = rec.pid;
        let logs = fx.logs.len();
        let result = self.dispatch(cfg, id, msg, fx);
        self.proposals.next_id = None;
        if !local {
            fx.logs.truncate(logs);
        }
        match result {
            Ok(()) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.refused_in_a_row = 0;
                }
            }
            Err(r) if local => self.refuse(id, kind, &r, fx),
            Err(_) => {}
        }
        if let Some(r) = self.cluster.as_mut() {
            r.clock = None;
        }
    }

    fn apply_admit(
        &mut self,
        cfg: &HubConfig,
        session: &Arc<str>,
        rec: Rec,
        t: u64,
        fx: &mut Effects,
    ) {
        let (Some(aid), Some(name)) = (
            rec.id.as_deref().and_then(AgentId::parse),
            rec.name.as_deref().and_then(AgentName::parse),
        ) else {
            return;
        };
        let keyed = match rec.pem {
            Some(pem) => match trust::canonical_pubkey(&pem) {
                Ok(k) => Some((pem, k.to_bytes())),
                Err(_) => return,
            },
            None => None,
        };
        let mine = self.cluster.as_ref().is_some_and(|r| r.session == *session);
        // This node's connection, if it is still waiting for this answer.
        let local = mine
            .then(|| {
                self.conns
                    .get(&rec.c)
                    .filter(|c| !c.ghost && c.agent.is_none() && c.admitting.is_some())
                    .map(|_| rec.c)
            })
            .flatten();
        if mine && local.is_none() {
            // It left before its answer came; its `gone` follows.
            return;
        }
        let refuse_local = |st: &mut State, r: Refusal, fx: &mut Effects| {
            if let Some(id) = local {
                if let Some(c) = st.conns.get_mut(&id) {
                    c.admitting = None;
                }
                st.refuse(id, "IDENTIFY", &r, fx);
            }
        };
        if let Some(&holder) = self.agents.get(&aid) {
            let holder_proven = self
                .conns
                .get(&holder)
                .and_then(|c| c.agent.as_ref())
                .is_some_and(|a| a.proven);
            if !rec.proven || holder_proven {
                let msg = if holder_proven {
                    "An agent with this identity is already connected (and has proven its key)"
                } else {
                    "An agent with this identity is already connected"
                };
                refuse_local(self, Refusal::invalid(msg), fx);
                return;
            }
            let r = Refusal::new(
                ErrorCode::SessionDisplaced,
                "Another connection proved it holds this identity's private key; closing",
            );
            self.agents.remove(&aid);
            if let Some(rp) = self.cluster.as_mut() {
                rp.final_removal = true;
            }
            self.kick(holder, "displaced by a proven connection", Some(&r), fx);
            self.reap(fx);
            if let Some(rp) = self.cluster.as_mut() {
                rp.final_removal = false;
            }
        }
        if let Some((_, key)) = &keyed {
            if self.keys.check(aid.as_str(), key) == Binding::Collides {
                let r = Refusal::new(
                    ErrorCode::IdentityCollision,
                    format!(
                        "The id {} is bound to a different key on this relay; your key's \
                         id collides with it, so it cannot be used here (generate a new identity)",
                        aid.as_str()
                    ),
                );
                refuse_local(self, r, fx);
                return;
            }
        }
        if let Some(r) = self.cluster.as_mut() {
            r.clock = Some(t);
        }
        let id = match local {
            Some(id) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.admitting = None;
                }
                id
            }
            None => self.add_mirror(cfg, session, rec.c),
        };
        let logs = fx.logs.len();
        self.admit(cfg, id, aid, name, keyed, rec.proven, fx);
        if local.is_none() {
            fx.logs.truncate(logs);
        }
        if let Some(r) = self.cluster.as_mut() {
            r.clock = None;
        }
    }

    fn add_mirror(&mut self, cfg: &HubConfig, session: &Arc<str>, c: ConnId) -> ConnId {
        self.next_id += 1;
        let id = self.next_id;
        self.conns.insert(
            id,
            Conn {
                outbox: Box::new(NullQueue),
                stream: None,
                peer: None,
                opened: now_ms(),
                agent: None,
                pending: None,
                channels: Vec::new(),
                bucket: TokenBucket::full(cfg.conn_rate(), Instant::now()),
                refusals: 0,
                refused_in_a_row: 0,
                admitting: None,
                origin: Some((session.clone(), c)),
                ghost: false,
            },
        );
        if let Some(r) = self.cluster.as_mut() {
            r.remote.insert((session.clone(), c), id);
            if let Some(seen) = r.nodes.get_mut(session) {
                seen.mirrors += 1;
                seen.declared = false;
            }
        }
        id
    }
}

/// A record's opening: `{"k":KIND,"n":SESSION,"t":T` (the caller adds its
/// fields and the closing brace). Plain text, not `json!`: records are
/// made per message, and this is lighter in time and in code.
fn record(kind: &str, session: &str, t: u64) -> String {
    format!(r#"{{"k":"{kind}","n":{},"t":{t}"#, js(session))
}

/// `s` as a JSON string.
fn js(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The node id in a session name (`<node-id>/<random>`).
fn node_of(session: &str) -> String {
    session
        .rsplit_once('/')
        .map_or(session, |(n, _)| n)
        .to_string()
}

impl Hub {
    /// Queues a record of this node's own (kept and re-sent if Redis is
    /// away when it is sent).
    pub fn publish_control(&self, body: String) {
        if let Some(link) = &self.link {
            let _ = link.publish(Out {
                body,
                origin: None,
                retry: true,
            });
        }
    }
}

/// A snapshot's form (`workbench:relay:snapshot`, field `state`).
const SNAPSHOT_FORMAT: u64 = 1;

impl Hub {
    /// Counts `n` applied records; at a snapshot point, and if this node is
    /// the one to write it (the live session first in name order), returns
    /// the state as it stands after them.
    pub fn snapshot_due(&self, n: usize) -> Option<String> {
        let mut st = self.lock();
        let r = st.cluster.as_mut()?;
        r.since_snapshot += n;
        if r.since_snapshot < r.snapshot_every {
            return None;
        }
        r.since_snapshot = 0;
        let now = now_ms();
        let leader = r
            .nodes
            .iter()
            .filter(|(s, seen)| {
                **s == r.session
                    || (!seen.declared && now.saturating_sub(seen.last) < cluster::DEAD_MS)
            })
            .map(|(s, _)| s.clone())
            .min();
        if leader.as_ref() != Some(&r.session) {
            return None;
        }
        Some(st.snapshot_json(&self.cfg))
    }

    /// Replaces the replica's state with a snapshot (at start, or after a
    /// gap). Returns what it held, for the log.
    pub fn load_snapshot(&self, text: &str) -> Result<serde_json::Value, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("snapshot: bad JSON ({e})"))?;
        if v["format"].as_u64().unwrap_or(0) > SNAPSHOT_FORMAT {
            return Err(format!(
                "the cluster's snapshot was written by a newer workbench (format {}); \
                 upgrade this node",
                v["format"]
            ));
        }
        let lasting =
            crate::relay::store::decode_lines(v["lasting"].as_str().unwrap_or("").as_bytes())
                .map_err(|e| format!("snapshot: {e}"))?;
        let mut st = self.lock();
        let counts = st.restore(&self.cfg, lasting);
        let mut fx = Effects::default();
        st.restore_presence(&self.cfg, &v, &mut fx);
        Ok(counts)
    }

    /// The reader found records it never applied trimmed away (it was cut
    /// off while the stream moved on): its clients are told and closed,
    /// and its state is rebuilt from the snapshot.
    pub fn reset_replica(&self) {
        let mut fx = Effects::default();
        {
            let mut st = self.lock();
            let Some(me) = st.cluster.as_ref().map(|r| r.session.clone()) else {
                return;
            };
            st.node_dead(&me, &mut fx);
            let mirrors: Vec<ConnId> = st
                .conns
                .iter()
                .filter(|(_, c)| c.origin.is_some())
                .map(|(id, _)| *id)
                .collect();
            st.remove_final(
                mirrors.into_iter().map(|id| (id, "resync")).collect(),
                &mut fx,
            );
            let q = &self.cfg.quotas;
            st.channels.clear();
            let now = Instant::now();
            for name in super::DEFAULT_CHANNELS {
                if let Some(n) = super::ChannelName::parse(name) {
                    st.channels
                        .insert(n, super::Channel::new(false, false, q.channel_rate, now));
                }
            }
            st.proposals = super::ProposalStore::new(q.proposals);
            st.keys = super::KeyBook::new(q.max_bindings);
            st.seen = super::SeenSigs::new(q.max_seen_sigs);
            if let Some(r) = st.cluster.as_mut() {
                r.remote.clear();
                r.nodes.clear();
                r.since_snapshot = 0;
            }
        }
        self.finish(fx);
    }
}

impl State {
    fn snapshot_json(&self, cfg: &HubConfig) -> String {
        let lasting = String::from_utf8_lossy(&self.snapshot_lines(cfg)).into_owned();
        let session = self.session();
        let mut agents = Vec::new();
        for (id, c) in &self.conns {
            let Some(a) = c.agent.as_ref() else { continue };
            let (s, cid) = match &c.origin {
                Some((s, cid)) => (s.clone(), *cid),
                None => (session.clone(), *id),
            };
            agents.push(
                json!({"s": &*s, "c": cid, "id": a.id.as_str(), "name": a.name.as_str(),
                               "pem": a.pubkey, "proven": a.proven}),
            );
        }
        let members: serde_json::Map<String, serde_json::Value> = self
            .channels
            .iter()
            .filter(|(_, ch)| !ch.members.is_empty())
            .map(|(n, ch)| (n.as_str().to_string(), json!(self.agent_ids(&ch.members))))
            .collect();
        let nodes: Vec<serde_json::Value> = self
            .cluster
            .as_ref()
            .map(|r| {
                r.nodes
                    .iter()
                    .filter(|(_, seen)| !seen.declared)
                    .map(|(s, seen)| json!({"s": &**s, "node": seen.node}))
                    .collect()
            })
            .unwrap_or_default();
        json!({"format": SNAPSHOT_FORMAT, "t": now_ms(), "lasting": lasting,
               "agents": agents, "members": members, "nodes": nodes})
        .to_string()
    }

    /// The agents and channel memberships of a snapshot, as mirrors.
    fn restore_presence(&mut self, cfg: &HubConfig, v: &serde_json::Value, fx: &mut Effects) {
        let t = v["t"].as_u64().unwrap_or_else(now_ms);
        let Some(r) = self.cluster.as_mut() else {
            return;
        };
        for n in v["nodes"].as_array().into_iter().flatten() {
            let (Some(s), Some(node)) = (n["s"].as_str(), n["node"].as_str()) else {
                continue;
            };
            r.nodes.entry(Arc::from(s)).or_insert(Seen {
                node: node.to_string(),
                last: t,
                mirrors: 0,
                declared: false,
            });
        }
        let mut by_id: HashMap<String, ConnId> = HashMap::new();
        for a in v["agents"].as_array().into_iter().flatten() {
            let (Some(s), Some(c), Some(aid), Some(name)) = (
                a["s"].as_str(),
                a["c"].as_u64(),
                a["id"].as_str().and_then(AgentId::parse),
                a["name"].as_str().and_then(AgentName::parse),
            ) else {
                continue;
            };
            let keyed = match a["pem"].as_str() {
                Some(pem) => match trust::canonical_pubkey(pem) {
                    Ok(k) => Some((pem.to_string(), k.to_bytes())),
                    Err(_) => continue,
                },
                None => None,
            };
            let session: Arc<str> = Arc::from(s);
            if let Some(r) = self.cluster.as_mut() {
                r.nodes.entry(session.clone()).or_insert(Seen {
                    node: node_of(s),
                    last: t,
                    mirrors: 0,
                    declared: false,
                });
            }
            let id = self.add_mirror(cfg, &session, c);
            let logs = fx.logs.len();
            self.admit(cfg, id, aid.clone(), name, keyed, a["proven"] == true, fx);
            fx.logs.truncate(logs);
            by_id.insert(aid.as_str().to_string(), id);
        }
        for (chan, list) in v["members"].as_object().into_iter().flatten() {
            let Some(name) = super::ChannelName::parse(chan) else {
                continue;
            };
            let ids: Vec<ConnId> = list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| by_id.get(a.as_str()?).copied())
                .collect();
            if let Some(ch) = self.channels.get_mut(&name) {
                for id in &ids {
                    ch.members.push(*id);
                }
                if !ch.members.is_empty() {
                    ch.empty_since = None;
                }
            }
            for id in ids {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.channels.push(name.clone());
                }
            }
        }
    }
}
