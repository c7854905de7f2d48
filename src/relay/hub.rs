//! The relay's shared state: connections, agents, channels with their
//! invite lists and replay rings, and the handlers that turn one validated
//! [`ClientMsg`] into messages queued on outboxes. It never touches a socket:
//! it only `try_send`s to bounded outboxes under its lock, and does the few
//! blocking things (logging, shutting a dropped peer's socket) after
//! unlocking. A peer whose outbox is full is dropped, never waited for.
//!
//! Trust (issue 12, docs/relay-trust.md): a keyed agent's MSG must be
//! signed, fresh and new; an id is bound to the first key that held it;
//! `--require-proof` issues a CHALLENGE before WELCOME; every resource a
//! client can make the relay hold has a bound, and every refusal is logged.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::frame::{ServerFrame, SharedStream};
use super::handle_proposal::{self, Actor};
use super::outbox::{Outgoing, SendQueue};
use super::proposal_wire::ProposalRequest;
use super::proposals::{Proposal, ProposalStore, StoreLimits};
use super::protocol::{
    AgentId, AgentName, ChannelInfo, ChannelName, ClientMsg, ErrorCode, Refusal, ServerMsg, Target,
};
use super::store::{Ephemeral, Loaded, Record, SnapshotJob, Store};
use super::trust::{self, Allowlist, Binding, Challenge, KeyBook, KeyBytes, Replay, SeenSigs};
use super::{identity, signing};
use crate::ratelimit::{KeyedLimiter, Rate, TokenBucket};
use crate::util::{log_event, now_ms};

mod replica;

pub use replica::NullQueue;

/// Channels that exist from startup (0.3.0 creates these two). They are
/// never freed.
pub const DEFAULT_CHANNELS: [&str; 2] = ["#general", "#agents"];
/// Refusals logged per connection; past this they are only counted (and
/// the count is logged at disconnect), so a flood cannot flood the log.
const LOGGED_REFUSALS: u32 = 5;
/// A connection refused this many times in a row, with nothing accepted in
/// between, is closed: no honest client keeps asking for what it was just
/// refused, and the flood then costs a reconnect (which is rate-limited).
const REFUSALS_IN_A_ROW: u32 = 200;
/// Under `--require-proof`, how long a client that did not ask for a
/// challenge (`prove`) has to answer one before it is told proof is
/// required: a client that can answer does so at once; a 0.3.0 client
/// never will, and should hear why promptly.
const PROOF_GRACE_MS: u64 = 3_000;
/// Idle entries in the per-address limiters are forgotten after this.
const LIMITER_IDLE: Duration = Duration::from_secs(3600);
const LIMITER_KEYS: usize = 100_000;

pub type ConnId = u64;

/// Who may speak for a key (`workbench relay` flags).
#[derive(Debug, Clone)]
pub struct TrustConfig {
    /// `--require-proof`: a keyed IDENTIFY gets a CHALLENGE, never WELCOME
    /// before a verified VERIFY_IDENTITY.
    pub require_proof: bool,
    /// `--challenge-timeout`: how long a CHALLENGE may be answered.
    pub challenge_ms: u64,
    /// `--identify-timeout`: a connection that has not identified by then
    /// is closed.
    pub identify_ms: u64,
    /// `--ts-window`: a signed MSG's `ts` may be this far from our clock.
    pub ts_window_ms: u64,
    /// `--no-ephemeral`: refuse IDENTIFY without a pubkey.
    pub no_ephemeral: bool,
    /// `--allow FILE`: only these keys may IDENTIFY with a pubkey.
    pub allow: Option<Allowlist>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            require_proof: false,
            challenge_ms: 60_000,
            identify_ms: 10_000,
            ts_window_ms: 300_000,
            no_ephemeral: false,
            allow: None,
        }
    }
}

/// What one client can make the relay hold or do (`workbench relay` flags).
#[derive(Debug, Clone)]
pub struct Quotas {
    /// `--max-channels`: channels in total, the two defaults included.
    pub max_channels: usize,
    /// `--channels-per-hour`: CREATE_CHANNEL per agent per hour; a client
    /// address may create four times as many (ephemeral ids are free).
    pub channels_per_hour: u32,
    /// `--channel-idle`: a created channel with no members for this long
    /// is freed (with its invite list and replay).
    pub channel_idle: Duration,
    /// `--max-invites`: invitations per channel.
    pub max_invites: usize,
    /// `--ip-rate-*`: messages that reach others (MSG, INVITE, proposal
    /// messages) per client address (IPv6: per /64), over all its
    /// connections.
    pub ip_rate: Rate,
    /// `--channel-rate-*`: MSGs per channel, from all senders.
    pub channel_rate: Rate,
    /// `--max-proposals`, `--max-pending`, `--proposal-expiry`.
    pub proposals: StoreLimits,
    /// Key bindings kept (id → first key).
    pub max_bindings: usize,
    /// Signatures remembered for replay refusal.
    pub max_seen_sigs: usize,
}

impl Quotas {
    /// The defaults for a given per-connection rate: an address may do what
    /// ten busy agents do (burst six), a channel what twenty do.
    pub fn for_rate(per_conn: Rate) -> Quotas {
        Quotas {
            max_channels: 1000,
            channels_per_hour: 10,
            channel_idle: Duration::from_secs(600),
            max_invites: 1000,
            ip_rate: Rate::new(per_conn.burst * 6.0, per_conn.per_sec * 10.0),
            channel_rate: Rate::new(per_conn.burst * 20.0, per_conn.per_sec * 20.0),
            proposals: StoreLimits::default(),
            max_bindings: 100_000,
            max_seen_sigs: 200_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub server_name: String,
    /// Replay ring length per channel (`--buffer-size`).
    pub buffer_size: usize,
    pub rate_burst: f64,
    pub rate_per_sec: f64,
    pub log_messages: bool,
    pub trust: TrustConfig,
    pub quotas: Quotas,
}

impl HubConfig {
    fn conn_rate(&self) -> Rate {
        Rate::new(self.rate_burst, self.rate_per_sec)
    }
}

struct Agent {
    id: AgentId,
    name: AgentName,
    /// The PEM sent with IDENTIFY (canonical Ed25519): signatures on this
    /// agent's messages are verified against it.
    pubkey: Option<String>,
    key: Option<KeyBytes>,
    /// The connection has shown it holds the private key: a verified
    /// CHALLENGE answer, or a verified signed message.
    proven: bool,
}

impl Agent {
    fn new(id: AgentId, name: AgentName, keyed: Option<(String, KeyBytes)>, proven: bool) -> Agent {
        let (pubkey, key) = match keyed {
            Some((p, k)) => (Some(p), Some(k)),
            None => (None, None),
        };
        Agent {
            id,
            name,
            pubkey,
            key,
            proven,
        }
    }
}

/// A keyed IDENTIFY waiting for its VERIFY_IDENTITY.
struct Pending {
    challenge: Challenge,
    name: AgentName,
    pubkey: String,
    key: KeyBytes,
    id: AgentId,
    /// The client asked for it (`prove`); otherwise `--require-proof` did,
    /// and a client that does not answer is likely 0.3.0 (PROOF_REQUIRED).
    asked: bool,
}

struct Conn {
    outbox: Box<dyn SendQueue>,
    /// Shut down when the hub drops this peer, waking its reader and writer.
    /// `None` in in-process tests.
    stream: Option<SharedStream>,
    /// The client address as limits count it (`ratelimit::client_key`).
    peer: Option<IpAddr>,
    /// When the connection registered (Unix ms), for the IDENTIFY deadline.
    opened: u64,
    agent: Option<Agent>,
    pending: Option<Pending>,
    channels: Vec<ChannelName>,
    bucket: TokenBucket,
    refusals: u32,
    /// Refusals since the last message that was accepted.
    refused_in_a_row: u32,
    /// Cluster mode (`replica`): the agent this connection asked to be,
    /// while its admission record travels through Redis (boxed: most
    /// connections never have one, and every Conn would carry its size).
    admitting: Option<Box<Agent>>,
    /// Cluster mode: a connection of another node, mirrored here (its
    /// node's session and its id there); its outbox discards.
    origin: Option<(std::sync::Arc<str>, ConnId)>,
    /// Cluster mode: a local connection that ended, kept (silent) until
    /// the record of its departure comes back through the stream, so it
    /// leaves at the same place in every node's order.
    ghost: bool,
}

/// A channel message kept for replay to later joiners.
struct Stored {
    from: AgentId,
    content: String,
    sig: Option<String>,
    sig_ts: Option<u64>,
    ts: u64,
}

struct Channel {
    invite_only: bool,
    /// Made by CREATE_CHANNEL (the defaults are not, and are never freed).
    created: bool,
    /// Who made it (kept in the journal; `None` for the defaults).
    creator: Option<AgentId>,
    invited: HashSet<AgentId>,
    /// Member connections, in no particular order.
    members: Vec<ConnId>,
    replay: VecDeque<Stored>,
    bucket: TokenBucket,
    /// Since when nobody is in it.
    empty_since: Option<Instant>,
}

impl Channel {
    fn new(invite_only: bool, created: bool, rate: Rate, now: Instant) -> Self {
        Channel {
            invite_only,
            created,
            creator: None,
            invited: HashSet::new(),
            members: Vec::new(),
            replay: VecDeque::new(),
            bucket: TokenBucket::full(rate, now),
            empty_since: Some(now),
        }
    }
}

struct State {
    next_id: ConnId,
    conns: HashMap<ConnId, Conn>,
    agents: HashMap<AgentId, ConnId>,
    channels: BTreeMap<ChannelName, Channel>,
    rng: u64,
    proposals: ProposalStore,
    keys: KeyBook,
    seen: SeenSigs,
    allow: Option<Allowlist>,
    ip_limit: KeyedLimiter<IpAddr>,
    creates_by_agent: KeyedLimiter<AgentId>,
    creates_by_ip: KeyedLimiter<IpAddr>,
    /// Where every acknowledged change is written before it is answered
    /// (relay/store.rs): the journal, or nothing under `--ephemeral`.
    store: Box<dyn Store>,
    /// `--cluster`: this node's view of the other nodes (`replica`).
    cluster: Option<replica::Replica>,
}

/// Work left for after the lock is released, and peers to drop.
#[derive(Default)]
struct Effects {
    doomed: Vec<(ConnId, &'static str)>,
    /// Doomed peers that were sent an ERROR and a close frame: the writer
    /// shuts their socket once those are out, so it is not shut here.
    kicked: Vec<ConnId>,
    shutdown: Vec<SharedStream>,
    logs: Vec<(&'static str, Value)>,
    /// A compaction's snapshot, written after the lock is released.
    snapshot: Option<SnapshotJob>,
    /// Cluster records to publish once the lock is released.
    publish: Vec<crate::relay::cluster::Out>,
}

pub struct Hub {
    cfg: HubConfig,
    state: Mutex<State>,
    /// `--cluster`: the queue to Redis.
    link: Option<crate::relay::cluster::Link>,
}

impl Hub {
    /// A hub that keeps nothing (`--ephemeral`, and in-process tests).
    pub fn new(cfg: HubConfig, seed: u64) -> Hub {
        Hub::with_store(cfg, seed, Box::new(Ephemeral), Vec::new())
    }

    /// A hub writing through `store`, starting from the state in `loaded`
    /// (what the store read back at start, oldest first).
    pub fn with_store(
        cfg: HubConfig,
        seed: u64,
        store: Box<dyn Store>,
        loaded: Vec<Loaded>,
    ) -> Hub {
        let q = &cfg.quotas;
        let hourly = |n: f64| Rate::new(n, n / 3600.0);
        let per_hour = f64::from(q.channels_per_hour);
        let mut st = State {
            next_id: 0,
            conns: HashMap::new(),
            agents: HashMap::new(),
            channels: BTreeMap::new(),
            rng: seed | 1,
            proposals: ProposalStore::new(q.proposals),
            keys: KeyBook::new(q.max_bindings),
            seen: SeenSigs::new(q.max_seen_sigs),
            allow: cfg.trust.allow.clone(),
            ip_limit: KeyedLimiter::new(q.ip_rate, LIMITER_KEYS, LIMITER_IDLE),
            creates_by_agent: KeyedLimiter::new(hourly(per_hour), LIMITER_KEYS, LIMITER_IDLE),
            creates_by_ip: KeyedLimiter::new(hourly(per_hour * 4.0), LIMITER_KEYS, LIMITER_IDLE),
            store,
            cluster: None,
        };
        let now = Instant::now();
        for name in DEFAULT_CHANNELS {
            let name = ChannelName::parse(name).expect("default channel names are valid");
            st.channels
                .insert(name, Channel::new(false, false, q.channel_rate, now));
        }
        if !loaded.is_empty() {
            let counts = st.restore(&cfg, loaded);
            log_event("state_restored", counts);
        }
        Hub {
            cfg,
            state: Mutex::new(st),
            link: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a handler must not take every other connection down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection from `peer` (the client address; `None` in
    /// in-process tests); messages for it go to `outbox`.
    pub fn register(
        &self,
        outbox: impl SendQueue + 'static,
        stream: Option<SharedStream>,
        peer: Option<IpAddr>,
    ) -> ConnId {
        let mut st = self.lock();
        st.next_id += 1;
        let id = st.next_id;
        let bucket = TokenBucket::full(self.cfg.conn_rate(), Instant::now());
        st.conns.insert(
            id,
            Conn {
                outbox: Box::new(outbox),
                stream,
                peer: peer.map(crate::ratelimit::client_key),
                opened: now_ms(),
                agent: None,
                pending: None,
                channels: Vec::new(),
                bucket,
                refusals: 0,
                refused_in_a_row: 0,
                admitting: None,
                origin: None,
                ghost: false,
            },
        );
        id
    }

    /// Handles one validated message from connection `id`. Not inlined into
    /// the reader loop: its deep frames stay off the reader's resident stack.
    #[inline(never)]
    pub fn handle(&self, id: ConnId, msg: ClientMsg) {
        let mut fx = Effects::default();
        {
            let mut st = self.lock();
            let kind = msg.kind();
            match st.dispatch(&self.cfg, id, msg, &mut fx) {
                Ok(()) => {
                    if let Some(c) = st.conns.get_mut(&id) {
                        c.refused_in_a_row = 0;
                    }
                }
                Err(r) => st.refuse(id, kind, &r, &mut fx),
            }
            st.reap(&mut fx);
            st.maybe_compact(&self.cfg, &mut fx);
        }
        self.finish(fx);
    }

    /// Answers a message that never made it past parsing (bad JSON, a
    /// binary frame, …) with its ERROR, and logs it like every refusal.
    pub fn refuse(&self, id: ConnId, r: &Refusal) {
        let mut fx = Effects::default();
        {
            let mut st = self.lock();
            st.refuse(id, "unparsed", r, &mut fx);
            st.reap(&mut fx);
        }
        self.finish(fx);
    }

    /// By when (Unix ms) connection `id` must be identified, or `None` if it
    /// is (or is gone). The reader blocks no longer than this.
    pub fn deadline(&self, id: ConnId) -> Option<u64> {
        let st = self.lock();
        let c = st.conns.get(&id)?;
        if c.agent.is_some() {
            return None;
        }
        Some(match &c.pending {
            Some(p) => p.challenge.expires_at,
            None => c.opened.saturating_add(self.cfg.trust.identify_ms),
        })
    }

    /// The deadline passed: if `id` is still not identified, tell it why
    /// (ERROR, then a close frame) and return `true`: the reader ends the
    /// connection. `false` if there is nothing to do after all.
    pub fn expire(&self, id: ConnId) -> bool {
        let mut fx = Effects::default();
        let ended = {
            let mut st = self.lock();
            let now = now_ms();
            let Some(c) = st.conns.get(&id) else {
                return true;
            };
            if c.agent.is_some() {
                return false;
            }
            let secs = |ms: u64| ms.div_ceil(1000);
            let r = match &c.pending {
                Some(p) if now < p.challenge.expires_at => return false,
                None if now < c.opened.saturating_add(self.cfg.trust.identify_ms) => return false,
                Some(p) if !p.asked => Refusal::new(
                    ErrorCode::ProofRequired,
                    "This relay requires proof of key possession (--require-proof): \
                         answer CHALLENGE with VERIFY_IDENTITY, a signature over \
                         AGENTCHAT_AUTH|<nonce>|<challenge_id>|<timestamp>. AgentChat 0.3.0 \
                         clients cannot; connect without a pubkey, or with a client that \
                         answers CHALLENGE. Closing.",
                ),
                Some(_) => Refusal::new(
                    ErrorCode::VerificationFailed,
                    "Challenge expired before VERIFY_IDENTITY arrived; closing (connect again)",
                ),
                None => Refusal::new(
                    ErrorCode::AuthRequired,
                    format!(
                        "Not identified within {} s of connecting (IDENTIFY, and answer \
                         a CHALLENGE if one comes); closing",
                        secs(self.cfg.trust.identify_ms)
                    ),
                ),
            };
            st.refuse(id, "deadline", &r, &mut fx);
            st.kick(id, "deadline", None, &mut fx);
            st.reap(&mut fx);
            true
        };
        self.finish(fx);
        ended
    }

    /// Replaces the allowlist (SIGHUP); keyed agents and pending challenges
    /// whose key it no longer holds are told NOT_ALLOWED and closed.
    /// Returns how many were closed.
    pub fn set_allowlist(&self, allow: Option<Allowlist>) -> usize {
        let mut fx = Effects::default();
        let n = {
            let mut st = self.lock();
            st.allow = allow;
            let out: Vec<ConnId> = match &st.allow {
                None => Vec::new(),
                Some(list) => st
                    .conns
                    .iter()
                    .filter(|(_, c)| c.origin.is_none())
                    .filter(|(_, c)| {
                        let key = c
                            .agent
                            .as_ref()
                            .and_then(|a| a.key)
                            .or(c.pending.as_ref().map(|p| p.key));
                        key.is_some_and(|k| !list.allows(&k))
                    })
                    .map(|(id, _)| *id)
                    .collect(),
            };
            let r = Refusal::new(
                ErrorCode::NotAllowed,
                "Your key was removed from this relay's allowlist; closing",
            );
            for id in &out {
                st.kick(*id, "allowlist", Some(&r), &mut fx);
            }
            st.reap(&mut fx);
            out.len()
        };
        self.finish(fx);
        n
    }

    /// Removes a connection that ended; tells its channels.
    pub fn disconnect(&self, id: ConnId, reason: &'static str) {
        let mut fx = Effects::default();
        {
            let mut st = self.lock();
            fx.doomed.push((id, reason));
            st.reap(&mut fx);
        }
        // The reader and writer are already ending; no need to shut down.
        fx.shutdown.clear();
        self.finish(fx);
    }

    /// Asks every writer to send a close frame, then forgets all connections
    /// (their writers stop once the queue drains).
    pub fn close_all(&self) {
        let mut st = self.lock();
        for conn in st.conns.values() {
            let _ = conn
                .outbox
                .try_send(Outgoing::Close(1001, "server shutting down"));
        }
        st.conns.clear();
        st.agents.clear();
        for ch in st.channels.values_mut() {
            ch.members.clear();
        }
    }

    /// Number of registered connections (for tests and logs).
    pub fn connections(&self) -> usize {
        self.lock()
            .conns
            .values()
            .filter(|c| c.origin.is_none() && !c.ghost)
            .count()
    }

    pub fn server_name(&self) -> &str {
        &self.cfg.server_name
    }

    /// The store's mode and place (for logs and /health).
    pub fn store_info(&self) -> Value {
        self.lock().store.describe()
    }

    /// What the relay holds, for the soak's log line and tests.
    pub fn census(&self) -> Value {
        let st = self.lock();
        json!({"connections": st.conns.len(), "agents": st.agents.len(),
               "channels": st.channels.len(), "proposals": st.proposals.len(),
               "bindings": st.keys.len(), "seen_sigs": st.seen.len()})
    }
}

impl Effects {
    fn finish(self) {
        if let Some(job) = self.snapshot {
            // Its own thread: this connection's reader need not wait for
            // a snapshot write. If no thread can start, write it here.
            let job = std::sync::Arc::new(std::sync::Mutex::new(Some(job)));
            let theirs = job.clone();
            let spawned = std::thread::Builder::new()
                .name("relay-compact".into())
                .spawn(move || {
                    if let Some(j) = theirs.lock().ok().and_then(|mut j| j.take()) {
                        j.run();
                    }
                });
            if spawned.is_err() {
                if let Some(j) = job.lock().ok().and_then(|mut j| j.take()) {
                    j.run();
                }
            }
        }
        for s in self.shutdown {
            s.shutdown();
        }
        for (event, fields) in self.logs {
            log_event(event, fields);
        }
    }
}

fn auth_required() -> Refusal {
    Refusal::new(ErrorCode::AuthRequired, "Must IDENTIFY first")
}

fn not_found(ch: &ChannelName) -> Refusal {
    Refusal::new(
        ErrorCode::ChannelNotFound,
        format!("Channel {} not found", ch.as_str()),
    )
}

fn rate_limited(what: &str) -> Refusal {
    Refusal::new(
        ErrorCode::RateLimited,
        format!("Rate limit exceeded ({what}); slow down"),
    )
}

/// The journal refused a write: nothing changed, and the client is told.
fn not_saved(e: &std::io::Error, fx: &mut Effects) -> Refusal {
    fx.logs
        .push(("journal_write_failed", json!({"error": e.to_string()})));
    Refusal::new(
        ErrorCode::StoreFailed,
        format!("The relay could not save this change ({e}); nothing was changed, try again later"),
    )
}

fn verification_failed(why: &str) -> Refusal {
    Refusal::new(
        ErrorCode::VerificationFailed,
        format!("{why}; the challenge is dropped (send IDENTIFY again)"),
    )
}

impl ClientMsg {
    /// The wire type, for logs.
    fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Identify { .. } => "IDENTIFY",
            ClientMsg::VerifyIdentity { .. } => "VERIFY_IDENTITY",
            ClientMsg::Join { .. } => "JOIN",
            ClientMsg::Leave { .. } => "LEAVE",
            ClientMsg::Msg { .. } => "MSG",
            ClientMsg::ListChannels => "LIST_CHANNELS",
            ClientMsg::ListAgents { .. } => "LIST_AGENTS",
            ClientMsg::CreateChannel { .. } => "CREATE_CHANNEL",
            ClientMsg::Invite { .. } => "INVITE",
            ClientMsg::Ping => "PING",
            ClientMsg::Proposal { req, .. } => req.kind(),
        }
    }
}

impl State {
    /// Queues `out` for one connection; a full or closed outbox dooms it.
    fn send(&self, id: ConnId, out: Outgoing, fx: &mut Effects) {
        if let Some(c) = self.conns.get(&id) {
            if c.outbox.try_send(out).is_err() {
                fx.doomed.push((id, "outbox full"));
            }
        }
    }

    fn send_msg(&self, id: ConnId, msg: &ServerMsg, fx: &mut Effects) {
        self.send(id, Outgoing::Text(msg.encode(self.now()).into()), fx);
    }

    /// Queues one already-encoded frame on every member of `members`.
    fn broadcast(&self, members: &[ConnId], text: &ServerFrame, fx: &mut Effects) {
        for m in members {
            self.send(*m, Outgoing::Text(text.clone()), fx);
        }
    }

    /// Sends the ERROR for `r` and logs the refusal (the first
    /// `LOGGED_REFUSALS` of a connection; the rest are counted).
    fn refuse(&mut self, id: ConnId, kind: &str, r: &Refusal, fx: &mut Effects) {
        let text = ServerMsg::from(r).encode(self.now());
        self.send(id, Outgoing::Text(text.into()), fx);
        let mut flooding = false;
        if let Some(c) = self.conns.get_mut(&id) {
            c.refusals += 1;
            c.refused_in_a_row += 1;
            flooding = c.refused_in_a_row == REFUSALS_IN_A_ROW;
            if c.refusals <= LOGGED_REFUSALS {
                let agent = c.agent.as_ref().map(|a| a.id.as_str());
                fx.logs.push((
                    "refused",
                    json!({"conn": id, "agent": agent, "msg_type": kind,
                           "code": r.code.as_str(), "message": &r.message}),
                ));
            }
        }
        if flooding {
            let r = Refusal::new(
                ErrorCode::RateLimited,
                format!("{REFUSALS_IN_A_ROW} requests in a row were refused; closing"),
            );
            self.kick(id, "refused in a row", Some(&r), fx);
        }
    }

    /// Ends connection `id` from the relay's side: an ERROR (if given), a
    /// close frame (policy violation, RFC 6455 §7.4.1), and it is forgotten
    /// now; the writer shuts the socket once both are written.
    fn kick(&mut self, id: ConnId, reason: &'static str, r: Option<&Refusal>, fx: &mut Effects) {
        if let Some(r) = r {
            self.refuse(id, "kick", r, fx);
        }
        self.send(id, Outgoing::Close(1008, reason), fx);
        fx.kicked.push(id);
        fx.doomed.push((id, reason));
    }

    fn agent_of(&self, id: ConnId) -> Result<&Agent, Refusal> {
        self.conns
            .get(&id)
            .and_then(|c| c.agent.as_ref())
            .ok_or_else(auth_required)
    }

    fn agent_ids(&self, members: &[ConnId]) -> Vec<&str> {
        members
            .iter()
            .filter_map(|m| self.conns.get(m)?.agent.as_ref())
            .map(|a| a.id.as_str())
            .collect()
    }

    fn next_random(&mut self) -> [u8; 8] {
        // SplitMix64: ids need to be unique and unpredictable enough not to
        // collide, not secret (LIST_AGENTS shows them to anyone).
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }

    /// Takes one token for a message that reaches someone else: from the
    /// connection's bucket (if `per_conn`) and from its address's.
    fn charge(&mut self, cfg: &HubConfig, id: ConnId, per_conn: bool) -> Result<(), Refusal> {
        if self.applying() {
            // Charged by the sender's node before it published (`precheck`).
            return Ok(());
        }
        let now = Instant::now();
        let conn = self.conns.get_mut(&id).ok_or_else(auth_required)?;
        if per_conn && !conn.bucket.try_take(now, cfg.conn_rate()) {
            return Err(rate_limited("per connection"));
        }
        if let Some(ip) = conn.peer {
            if !self.ip_limit.try_take(&ip, now) {
                return Err(rate_limited("per client address, over all its connections"));
            }
        }
        Ok(())
    }

    fn dispatch(
        &mut self,
        cfg: &HubConfig,
        id: ConnId,
        msg: ClientMsg,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        match msg {
            ClientMsg::Identify {
                name,
                pubkey,
                prove,
            } => self.handle_identify(cfg, id, name, pubkey, prove, fx),
            ClientMsg::VerifyIdentity {
                challenge_id,
                signature,
                timestamp,
            } => self.handle_verify(cfg, id, &challenge_id, &signature, timestamp, fx),
            ClientMsg::Join { channel } => self.handle_join(id, channel, fx),
            ClientMsg::Leave { channel } => self.handle_leave(id, channel, fx),
            ClientMsg::Msg {
                to,
                content,
                sig,
                ts,
            } => self.handle_msg(cfg, id, to, content, sig, ts, fx),
            ClientMsg::ListChannels => {
                let list = self
                    .channels
                    .iter()
                    .filter(|(_, c)| !c.invite_only)
                    .map(|(n, c)| ChannelInfo {
                        name: n.as_str().to_string(),
                        agents: c.members.len(),
                    })
                    .collect();
                self.send_msg(id, &ServerMsg::Channels { list }, fx);
                Ok(())
            }
            ClientMsg::ListAgents { channel } => {
                let ch = self
                    .channels
                    .get(&channel)
                    .ok_or_else(|| not_found(&channel))?;
                if ch.invite_only && !ch.members.contains(&id) {
                    return Err(Refusal::new(
                        ErrorCode::NotInvited,
                        format!("{} is invite-only", channel.as_str()),
                    ));
                }
                let list = self.agent_ids(&ch.members);
                let msg = ServerMsg::Agents {
                    channel: channel.as_str(),
                    list,
                };
                self.send_msg(id, &msg, fx);
                Ok(())
            }
            ClientMsg::CreateChannel {
                channel,
                invite_only,
            } => self.handle_create(cfg, id, channel, invite_only, fx),
            ClientMsg::Invite { channel, agent } => self.handle_invite(cfg, id, channel, agent, fx),
            ClientMsg::Ping => {
                self.send_msg(id, &ServerMsg::Pong {}, fx);
                Ok(())
            }
            ClientMsg::Proposal { req, raw } => self.handle_proposal(cfg, id, req, raw, fx),
        }
    }

    /// PROPOSAL / ACCEPT / REJECT / COMPLETE / DISPUTE (issue 7): verified
    /// and applied by `handle_proposal`; here only the lookups and the
    /// delivery: to the other party if connected, and echoed to the actor.
    fn handle_proposal(
        &mut self,
        cfg: &HubConfig,
        id: ConnId,
        req: ProposalRequest,
        raw: Map<String, Value>,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let kind = req.kind();
        self.agent_of(id)?;
        self.charge(cfg, id, true)?;
        let agent = self.agent_of(id)?;
        let (me, pubkey) = (agent.id.clone(), agent.pubkey.clone());
        let actor = Actor {
            id: me.as_str(),
            pubkey: pubkey.as_deref(),
        };
        let target = match &req {
            ProposalRequest::Propose { .. } => None,
            ProposalRequest::Accept { proposal_id, .. }
            | ProposalRequest::Reject { proposal_id, .. }
            | ProposalRequest::Complete { proposal_id, .. }
            | ProposalRequest::Dispute { proposal_id, .. } => Some(proposal_id.clone()),
        };
        let before: Option<Proposal> = target
            .as_deref()
            .and_then(|t| self.proposals.by_id(t).cloned());
        let now = self.now();
        let agents = &self.agents;
        let online = |a: &str| AgentId::parse(a).is_some_and(|a| agents.contains_key(&a));
        let routed = handle_proposal::handle(&mut self.proposals, actor, req, &raw, online, now)
            .inspect_err(|r| {
                if matches!(r, handle_proposal::Refused::InvalidSignature(_)) {
                    fx.logs.push((
                        "sig_verification_failed",
                        json!({"conn": id, "agent": me.as_str(), "msg_type": kind}),
                    ));
                }
            })?;
        // Kept before either party hears of it; undone if it cannot be.
        if let Some(rec) = self.proposals.by_id(&routed.id).map(Proposal::to_record) {
            if let Err(e) = self.store.append(&Record::Proposal(rec)) {
                self.proposals.undo(&routed.id, before);
                return Err(not_saved(&e, fx));
            }
        }
        // The signature verified: this connection holds the key.
        if let Some(a) = self.conns.get_mut(&id).and_then(|c| c.agent.as_mut()) {
            a.proven = true;
        }
        let text: ServerFrame = routed.frame.into();
        if let Some(dest) = routed
            .notify
            .as_deref()
            .and_then(AgentId::parse)
            .and_then(|a| self.agents.get(&a).copied())
        {
            if dest != id {
                self.send(dest, Outgoing::Text(text.clone()), fx);
            }
        }
        self.send(id, Outgoing::Text(text), fx);
        fx.logs.push((
            "proposal",
            json!({"conn": id, "agent": me.as_str(), "msg_type": kind, "stored": self.proposals.len()}),
        ));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_identify(
        &mut self,
        cfg: &HubConfig,
        id: ConnId,
        name: AgentName,
        pubkey: Option<String>,
        prove: bool,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        match self.conns.get(&id) {
            None => return Ok(()),
            Some(c) if c.agent.is_some() => {
                return Err(Refusal::invalid("Already identified"));
            }
            Some(c) if c.pending.is_some() => {
                return Err(Refusal::invalid(
                    "A CHALLENGE is pending: answer it with VERIFY_IDENTITY \
                     (a second IDENTIFY is refused)",
                ));
            }
            Some(_) => {}
        }
        let Some(pem) = pubkey else {
            if cfg.trust.no_ephemeral {
                return Err(Refusal::new(
                    ErrorCode::NotAllowed,
                    "This relay refuses clients without a key (--no-ephemeral): \
                     IDENTIFY with a pubkey",
                ));
            }
            let aid = loop {
                let aid = AgentId::ephemeral(self.next_random());
                if !self.agents.contains_key(&aid) {
                    break aid;
                }
            };
            self.admit_or_request(cfg, id, aid, name, None, false, fx);
            return Ok(());
        };
        let key = trust::canonical_pubkey(&pem)
            .map_err(|e| Refusal::invalid(format!("Invalid public key: {e}")))?
            .to_bytes();
        if self.allow.as_ref().is_some_and(|l| !l.allows(&key)) {
            return Err(Refusal::new(
                ErrorCode::NotAllowed,
                "This relay admits only the keys in its allowlist (--allow); yours is not in it",
            ));
        }
        let aid = AgentId::from_pubkey(&pem);
        self.check_binding(&aid, &key)?;
        if cfg.trust.require_proof || prove {
            // Under --require-proof a client that did not ask is given only
            // a short grace to answer (see PROOF_GRACE_MS).
            let ttl = if prove {
                cfg.trust.challenge_ms
            } else {
                cfg.trust.challenge_ms.min(PROOF_GRACE_MS)
            };
            let challenge = Challenge::new(now_ms(), ttl).ok_or_else(|| {
                Refusal::invalid("The relay cannot make a challenge (no randomness); try later")
            })?;
            let msg = ServerMsg::Challenge {
                challenge_id: &challenge.id,
                nonce: &challenge.nonce,
                expires_at: challenge.expires_at,
            };
            self.send_msg(id, &msg, fx);
            fx.logs.push((
                "challenge",
                json!({"conn": id, "agent": aid.as_str(), "challenge_id": &challenge.id, "asked": prove}),
            ));
            if let Some(c) = self.conns.get_mut(&id) {
                c.pending = Some(Pending {
                    challenge,
                    name,
                    pubkey: pem,
                    key,
                    id: aid,
                    asked: prove,
                });
            }
            return Ok(());
        }
        // Compatible mode: welcomed at once, not yet proven.
        if self.agents.contains_key(&aid) {
            return Err(Refusal::invalid(
                "An agent with this identity is already connected",
            ));
        }
        self.persist_binding(&aid, &key, fx)?;
        self.admit_or_request(cfg, id, aid, name, Some((pem, key)), false, fx);
        Ok(())
    }

    /// An id belongs to the first key that held it (issue 12).
    fn check_binding(&self, aid: &AgentId, key: &KeyBytes) -> Result<(), Refusal> {
        if self.keys.check(aid.as_str(), key) == Binding::Collides {
            return Err(Refusal::new(
                ErrorCode::IdentityCollision,
                format!(
                    "The id {} is bound to a different key on this relay; your key's \
                     id collides with it, so it cannot be used here (generate a new identity)",
                    aid.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// Writes a first binding of `aid` to `key` to the journal, before the
    /// WELCOME that makes it visible (`admit` then binds it in memory).
    fn persist_binding(
        &mut self,
        aid: &AgentId,
        key: &KeyBytes,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        if self.keys.check(aid.as_str(), key) == Binding::New {
            self.store
                .append(&Record::Bind {
                    id: aid.as_str(),
                    key,
                })
                .map_err(|e| not_saved(&e, fx))?;
        }
        Ok(())
    }

    /// Gives connection `id` its agent id and sends WELCOME.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        cfg: &HubConfig,
        id: ConnId,
        aid: AgentId,
        name: AgentName,
        keyed: Option<(String, KeyBytes)>,
        proven: bool,
        fx: &mut Effects,
    ) {
        fx.logs.push((
            "identify",
            json!({"conn": id, "agent": aid.as_str(), "name": name.as_str(),
                   "pubkey": keyed.is_some(), "verified": proven}),
        ));
        if let Some((_, key)) = &keyed {
            let agents = &self.agents;
            self.keys.bind(aid.as_str(), *key, |a| {
                AgentId::parse(a).is_some_and(|a| agents.contains_key(&a))
            });
        }
        self.agents.insert(aid.clone(), id);
        let welcome = ServerMsg::Welcome {
            agent_id: aid.as_str(),
            server: &cfg.server_name,
            verified: proven.then_some(true),
        }
        .encode(self.now());
        if let Some(c) = self.conns.get_mut(&id) {
            c.agent = Some(Agent::new(aid, name, keyed, proven));
        }
        self.send(id, Outgoing::Text(welcome.into()), fx);
    }

    /// VERIFY_IDENTITY: the answer to this connection's CHALLENGE.
    fn handle_verify(
        &mut self,
        cfg: &HubConfig,
        id: ConnId,
        challenge_id: &str,
        signature: &str,
        timestamp: f64,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        if conn.agent.is_some() {
            return Err(Refusal::invalid("Already identified"));
        }
        let Some(p) = conn.pending.take() else {
            return Err(Refusal::new(
                ErrorCode::VerificationFailed,
                "No CHALLENGE is pending (a failed or expired one is dropped); send IDENTIFY",
            ));
        };
        if challenge_id != p.challenge.id {
            return Err(verification_failed(
                "challenge_id does not match the pending CHALLENGE",
            ));
        }
        if now_ms() > p.challenge.expires_at {
            return Err(verification_failed("The challenge expired"));
        }
        let text = p.challenge.signing_text(timestamp);
        let ok =
            identity::parse_pubkey(&p.pubkey).is_ok_and(|k| identity::verify(&k, &text, signature));
        if !ok {
            fx.logs.push((
                "sig_verification_failed",
                json!({"conn": id, "agent": p.id.as_str(), "msg_type": "VERIFY_IDENTITY"}),
            ));
            return Err(verification_failed(&format!(
                "The signature does not verify against your pubkey over {}",
                Value::from(text)
            )));
        }
        self.check_binding(&p.id, &p.key)?;
        if self.cluster.is_some() {
            // Who holds the id is decided where the stream says (`replica`).
            self.request_admit(id, p.id, p.name, Some((p.pubkey, p.key)), true, fx);
            return Ok(());
        }
        self.persist_binding(&p.id, &p.key, fx)?;
        if let Some(&holder) = self.agents.get(&p.id) {
            let holder_proven = self
                .conns
                .get(&holder)
                .and_then(|c| c.agent.as_ref())
                .is_some_and(|a| a.proven);
            if holder_proven {
                return Err(Refusal::invalid(
                    "An agent with this identity is already connected (and has proven its key)",
                ));
            }
            // A connection that proved the key wins over one that has not.
            let r = Refusal::new(
                ErrorCode::SessionDisplaced,
                "Another connection proved it holds this identity's private key; closing",
            );
            self.agents.remove(&p.id);
            self.kick(holder, "displaced by a proven connection", Some(&r), fx);
            // Forget it now, so its channels hear it left before we join.
            self.reap(fx);
        }
        self.admit(cfg, id, p.id, p.name, Some((p.pubkey, p.key)), true, fx);
        Ok(())
    }

    fn handle_join(
        &mut self,
        id: ConnId,
        channel: ChannelName,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let agent_id = self.agent_of(id)?.id.clone();
        let ch = self
            .channels
            .get(&channel)
            .ok_or_else(|| not_found(&channel))?;
        if ch.invite_only && !ch.invited.contains(&agent_id) {
            return Err(Refusal::new(
                ErrorCode::NotInvited,
                format!(
                    "{} is invite-only and you are not invited",
                    channel.as_str()
                ),
            ));
        }
        let already = ch.members.contains(&id);
        if !already {
            let text: ServerFrame = ServerMsg::AgentJoined {
                channel: channel.as_str(),
                agent: agent_id.as_str(),
            }
            .encode(self.now())
            .into();
            self.broadcast(&ch.members, &text, fx);
        }
        if let Some(ch) = self.channels.get_mut(&channel) {
            if !already {
                ch.members.push(id);
                ch.empty_since = None;
            }
        }
        if let Some(c) = self.conns.get_mut(&id) {
            if !already {
                c.channels.push(channel.clone());
            }
        }
        let ch = self
            .channels
            .get(&channel)
            .ok_or_else(|| not_found(&channel))?;
        let joined = ServerMsg::Joined {
            channel: channel.as_str(),
            agents: self.agent_ids(&ch.members),
        };
        self.send_msg(id, &joined, fx);
        if !already {
            // Replay the ring, oldest first, flagged so clients can tell.
            for m in &ch.replay {
                let text = ServerMsg::Msg {
                    from: m.from.as_str(),
                    to: channel.as_str(),
                    content: &m.content,
                    sig: m.sig.as_deref(),
                    sig_ts: m.sig_ts,
                    replay: true,
                }
                .encode(m.ts);
                self.send(id, Outgoing::Text(text.into()), fx);
            }
            fx.logs.push((
                "join",
                json!({"conn": id, "agent": agent_id.as_str(), "channel": channel.as_str()}),
            ));
        }
        Ok(())
    }

    /// Takes `id` out of `channel`'s members; true if it was one.
    fn remove_member(&mut self, channel: &ChannelName, id: ConnId) -> bool {
        let Some(ch) = self.channels.get_mut(channel) else {
            return false;
        };
        let Some(i) = ch.members.iter().position(|m| *m == id) else {
            return false;
        };
        ch.members.swap_remove(i);
        if ch.members.is_empty() {
            ch.empty_since = Some(Instant::now());
        }
        true
    }

    fn handle_leave(
        &mut self,
        id: ConnId,
        channel: ChannelName,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let agent_id = self.agent_of(id)?.id.clone();
        if !self.channels.contains_key(&channel) {
            return Err(not_found(&channel));
        }
        let was_member = self.remove_member(&channel, id);
        if let Some(c) = self.conns.get_mut(&id) {
            c.channels.retain(|c| *c != channel);
        }
        self.send_msg(
            id,
            &ServerMsg::Left {
                channel: channel.as_str(),
            },
            fx,
        );
        if was_member {
            self.tell_left(&channel, agent_id.as_str(), fx);
            fx.logs.push((
                "leave",
                json!({"conn": id, "agent": agent_id.as_str(), "channel": channel.as_str()}),
            ));
        }
        Ok(())
    }

    fn tell_left(&self, channel: &ChannelName, agent: &str, fx: &mut Effects) {
        if let Some(ch) = self.channels.get(channel) {
            let text: ServerFrame = ServerMsg::AgentLeft {
                channel: channel.as_str(),
                agent,
            }
            .encode(self.now())
            .into();
            self.broadcast(&ch.members, &text, fx);
        }
    }

    /// A keyed agent's MSG must be signed over `{to, content, ts}` with a
    /// `ts` near our clock, and its signature must be new (issue 12 §1, §3).
    fn check_signed(
        &mut self,
        cfg: &HubConfig,
        pem: &str,
        to: &Target,
        content: &str,
        sig: Option<&str>,
        ts: Option<u64>,
    ) -> Result<(), Refusal> {
        let Some(sig) = sig else {
            return Err(Refusal::new(
                ErrorCode::SignatureRequired,
                "Messages from an identity with a pubkey must be signed: add ts and \
                 sig over JSON.stringify({to, content, ts})",
            ));
        };
        let Some(ts) = ts else {
            return Err(Refusal::new(
                ErrorCode::SignatureRequired,
                "A signed MSG must carry ts (Unix ms), which its signature covers",
            ));
        };
        let text = signing::msg_signing_text(to.as_str(), content, Some(ts));
        let ok = identity::parse_pubkey(pem).is_ok_and(|k| identity::verify(&k, &text, sig));
        if !ok {
            return Err(Refusal::new(
                ErrorCode::SignatureRequired,
                "MSG signature does not verify against your pubkey \
                 (it signs JSON.stringify({to, content, ts}) with the ts sent)",
            ));
        }
        let now = now_ms();
        let window = cfg.trust.ts_window_ms;
        if ts.abs_diff(now) > window {
            return Err(Refusal::new(
                ErrorCode::TimestampOutOfWindow,
                format!(
                    "Signed MSG ts {ts} is more than {} s from the relay's clock ({now}); \
                     check your clock, or re-sign with a fresh ts",
                    window / 1000
                ),
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_msg(
        &mut self,
        cfg: &HubConfig,
        id: ConnId,
        to: Target,
        content: String,
        sig: Option<String>,
        client_ts: Option<u64>,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let agent = self.agent_of(id)?;
        let from = agent.id.clone();
        let pubkey = agent.pubkey.clone();
        self.charge(cfg, id, true)?;
        // Where it goes, before any signature is spent on it.
        let dest = match &to {
            Target::Channel(name) => {
                let ch = self.channels.get(name).ok_or_else(|| not_found(name))?;
                if !ch.members.contains(&id) {
                    return Err(Refusal::new(
                        ErrorCode::NotInvited,
                        format!("You are not a member of {}; JOIN it first", name.as_str()),
                    ));
                }
                None
            }
            Target::Agent(target) => match self.agents.get(target) {
                Some(&dest) => Some(dest),
                None => {
                    return Err(Refusal::new(
                        ErrorCode::AgentNotFound,
                        format!("Agent {} not found", target.as_str()),
                    ))
                }
            },
        };
        if let Some(pem) = pubkey.as_ref().filter(|_| !self.applying()) {
            self.check_signed(cfg, pem, &to, &content, sig.as_deref(), client_ts)
                .inspect_err(|r| {
                    if r.code == ErrorCode::SignatureRequired && sig.is_some() {
                        fx.logs.push((
                            "sig_verification_failed",
                            json!({"conn": id, "agent": from.as_str(), "msg_type": "MSG"}),
                        ));
                    }
                })?;
        }
        let applying = self.applying();
        if let (Target::Channel(name), false) = (&to, applying) {
            let rate = cfg.quotas.channel_rate;
            if let Some(ch) = self.channels.get_mut(name) {
                if !ch.bucket.try_take(Instant::now(), rate) {
                    return Err(rate_limited(&format!("{} as a whole", name.as_str())));
                }
            }
        }
        if let (Some(sig), Some(ts), Some(_)) = (&sig, client_ts, &pubkey) {
            let forget_at = ts.saturating_add(cfg.trust.ts_window_ms);
            match self.seen.admit(sig, forget_at, self.now()) {
                Ok(()) => {}
                Err(Replay::Seen) => {
                    return Err(Refusal::new(
                        ErrorCode::ReplayDetected,
                        "This signed MSG was already accepted; a replayed frame is refused \
                         (sign each message with a fresh ts)",
                    ))
                }
                Err(Replay::Full) => return Err(rate_limited("the relay's replay memory is full")),
            }
            if let Some(a) = self.conns.get_mut(&id).and_then(|c| c.agent.as_mut()) {
                a.proven = true;
            }
        }
        // 0.3.0: every relayed frame's ts is the relay's clock. The client's
        // ts, which the signature covers, travels as sig_ts.
        let ts = self.now();
        let sig_ts = sig.as_ref().and(client_ts);
        let encoded = ServerMsg::Msg {
            from: from.as_str(),
            to: to.as_str(),
            content: &content,
            sig: sig.as_deref(),
            sig_ts,
            replay: false,
        }
        .encode(ts);
        // A channel message joins the replay buffer, which is kept: on disk
        // before any member (the sender included) sees it.
        if matches!(to, Target::Channel(_)) && cfg.buffer_size > 0 {
            self.store
                .append(&Record::Msg { frame: &encoded })
                .map_err(|e| not_saved(&e, fx))?;
        }
        let text: ServerFrame = encoded.into();
        if cfg.log_messages {
            fx.logs.push((
                "msg",
                json!({"from": from.as_str(), "to": to.as_str(), "content": &content}),
            ));
        }
        match (&to, dest) {
            (Target::Channel(name), _) => {
                if let Some(ch) = self.channels.get(name) {
                    self.broadcast(&ch.members, &text, fx);
                }
                if cfg.buffer_size > 0 {
                    if let Some(ch) = self.channels.get_mut(name) {
                        if ch.replay.len() >= cfg.buffer_size {
                            ch.replay.pop_front();
                        }
                        ch.replay.push_back(Stored {
                            from,
                            content,
                            sig,
                            sig_ts,
                            ts,
                        });
                    }
                }
            }
            (Target::Agent(_), Some(dest)) => {
                self.send(dest, Outgoing::Text(text.clone()), fx);
                if dest != id {
                    self.send(id, Outgoing::Text(text), fx);
                }
            }
            (Target::Agent(_), None) => {}
        }
        Ok(())
    }

    /// Compacts the journal when it asks: the whole state as records, here
    /// under the lock (memory only, plus one file create); the snapshot
    /// file is written after the lock is released (`Effects::finish`).
    fn maybe_compact(&mut self, cfg: &HubConfig, fx: &mut Effects) {
        if !self.store.wants_snapshot() {
            return;
        }
        let snap = self.snapshot_lines(cfg);
        match self.store.rotate(snap) {
            Ok(job) => {
                fx.logs.push((
                    "journal_compacting",
                    json!({"channels": self.channels.len(), "proposals": self.proposals.len(),
                           "bindings": self.keys.len()}),
                ));
                fx.snapshot = job;
            }
            Err(e) => fx.logs.push((
                "journal_compaction_failed",
                json!({"error": e.to_string(), "kept": "the current journal"}),
            )),
        }
    }

    /// Everything lasting, as journal lines that rebuild it.
    fn snapshot_lines(&self, cfg: &HubConfig) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, ch) in &self.channels {
            if ch.created {
                Record::Channel {
                    name: name.as_str(),
                    invite_only: ch.invite_only,
                    creator: ch.creator.as_ref().map(AgentId::as_str),
                }
                .encode_line(&mut out);
            }
            let mut invited: Vec<&AgentId> = ch.invited.iter().collect();
            invited.sort_unstable();
            for a in invited {
                Record::Invite {
                    channel: name.as_str(),
                    agent: a.as_str(),
                }
                .encode_line(&mut out);
            }
            if cfg.buffer_size > 0 {
                for m in &ch.replay {
                    let frame = ServerMsg::Msg {
                        from: m.from.as_str(),
                        to: name.as_str(),
                        content: &m.content,
                        sig: m.sig.as_deref(),
                        sig_ts: m.sig_ts,
                        replay: false,
                    }
                    .encode(m.ts);
                    Record::Msg { frame: &frame }.encode_line(&mut out);
                }
            }
        }
        for (id, key) in self.keys.iter() {
            Record::Bind { id, key }.encode_line(&mut out);
        }
        for p in self.proposals.iter() {
            Record::Proposal(p.to_record()).encode_line(&mut out);
        }
        out
    }

    /// Applies what the store read back at start, oldest first. Records
    /// that name nothing known (a message for a channel that is gone) are
    /// counted and skipped. Signed channel messages still in their window
    /// are remembered again, so a replay of one is still refused.
    fn restore(&mut self, cfg: &HubConfig, loaded: Vec<Loaded>) -> Value {
        let now = Instant::now();
        let ms = now_ms();
        let (mut records, mut skipped) = (0usize, 0usize);
        for rec in loaded {
            records += 1;
            let applied = match rec {
                Loaded::Channel {
                    name,
                    invite_only,
                    creator,
                } => ChannelName::parse(&name).map(|n| {
                    let mut ch = Channel::new(invite_only, true, cfg.quotas.channel_rate, now);
                    ch.creator = creator.as_deref().and_then(AgentId::parse);
                    // As at CREATE_CHANNEL: the creator is on the list.
                    if let (true, Some(c)) = (invite_only, &ch.creator) {
                        ch.invited.insert(c.clone());
                    }
                    self.channels.insert(n, ch);
                }),
                Loaded::Invite { channel, agent } => {
                    let ch = ChannelName::parse(&channel).and_then(|n| self.channels.get_mut(&n));
                    match (ch, AgentId::parse(&agent)) {
                        (Some(ch), Some(a)) => {
                            ch.invited.insert(a);
                            Some(())
                        }
                        _ => None,
                    }
                }
                Loaded::Drop { channel } => ChannelName::parse(&channel)
                    .filter(|n| self.channels.get(n).is_some_and(|c| c.created))
                    .map(|n| {
                        self.channels.remove(&n);
                    }),
                Loaded::Msg(v) => self.restore_msg(cfg, &v),
                Loaded::Proposal(v) => Proposal::from_record(&v)
                    .ok()
                    .map(|p| self.proposals.restore(p, ms)),
                Loaded::Bind { id, key } => {
                    self.keys.bind(&id, key, |_| false);
                    Some(())
                }
            };
            if applied.is_none() {
                skipped += 1;
            }
        }
        let window = cfg.trust.ts_window_ms;
        for ch in self.channels.values() {
            for m in &ch.replay {
                if let (Some(sig), Some(ts)) = (&m.sig, m.sig_ts) {
                    let _ = self.seen.admit(sig, ts.saturating_add(window), ms);
                }
            }
        }
        self.proposals.sweep(ms);
        let created = self.channels.values().filter(|c| c.created).count();
        let replay: usize = self.channels.values().map(|c| c.replay.len()).sum();
        json!({"records": records, "skipped": skipped, "channels_created": created,
               "replay_messages": replay, "proposals": self.proposals.len(),
               "bindings": self.keys.len()})
    }

    fn restore_msg(&mut self, cfg: &HubConfig, v: &Value) -> Option<()> {
        let name = ChannelName::parse(v["to"].as_str()?)?;
        let stored = Stored {
            from: AgentId::parse(v["from"].as_str()?)?,
            content: v["content"].as_str()?.to_string(),
            sig: v["sig"].as_str().map(str::to_string),
            sig_ts: v["sig_ts"].as_u64(),
            ts: v["ts"].as_u64()?,
        };
        let ch = self.channels.get_mut(&name)?;
        if cfg.buffer_size == 0 {
            return Some(());
        }
        while ch.replay.len() >= cfg.buffer_size {
            ch.replay.pop_front();
        }
        ch.replay.push_back(stored);
        Some(())
    }

    /// Frees created channels nobody has been in for `channel_idle`.
    fn free_idle_channels(&mut self, cfg: &HubConfig, fx: &mut Effects) {
        let now = Instant::now();
        let idle = cfg.quotas.channel_idle;
        let before = self.channels.len();
        let idle: Vec<ChannelName> = self
            .channels
            .iter()
            .filter(|(_, ch)| {
                ch.created
                    && ch.members.is_empty()
                    && ch
                        .empty_since
                        .is_some_and(|t| now.saturating_duration_since(t) >= idle)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in idle {
            // Freed only once the journal knows, or it would come back.
            let rec = Record::Drop {
                channel: name.as_str(),
            };
            match self.store.append(&rec) {
                Ok(()) => {
                    self.channels.remove(&name);
                }
                Err(e) => {
                    let _ = not_saved(&e, fx);
                    break;
                }
            }
        }
        let freed = before - self.channels.len();
        if freed > 0 {
            fx.logs.push((
                "channels_freed",
                json!({"freed": freed, "left": self.channels.len()}),
            ));
        }
    }

    fn handle_create(
        &mut self,
        cfg: &HubConfig,
        id: ConnId,
        channel: ChannelName,
        invite_only: bool,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let agent_id = self.agent_of(id)?.id.clone();
        if self.channels.contains_key(&channel) {
            return Err(Refusal::new(
                ErrorCode::ChannelExists,
                format!("Channel {} already exists", channel.as_str()),
            ));
        }
        // Not in a cluster: when a channel fell idle differs per node.
        if self.cluster.is_none() {
            self.free_idle_channels(cfg, fx);
        }
        if self.channels.len() >= cfg.quotas.max_channels {
            return Err(Refusal::new(
                ErrorCode::LimitReached,
                format!(
                    "This relay holds its maximum of {} channels; try again later",
                    cfg.quotas.max_channels
                ),
            ));
        }
        let now = Instant::now();
        let per_hour = cfg.quotas.channels_per_hour;
        let applying = self.applying();
        if !applying && !self.creates_by_agent.try_take(&agent_id, now) {
            return Err(rate_limited(&format!(
                "at most {per_hour} channels per agent per hour"
            )));
        }
        let peer = self.conns.get(&id).and_then(|c| c.peer);
        if let Some(ip) = peer.filter(|_| !applying) {
            if !self.creates_by_ip.try_take(&ip, now) {
                return Err(rate_limited(&format!(
                    "at most {} channels per client address per hour",
                    per_hour * 4
                )));
            }
        }
        self.store
            .append(&Record::Channel {
                name: channel.as_str(),
                invite_only,
                creator: Some(agent_id.as_str()),
            })
            .map_err(|e| not_saved(&e, fx))?;
        let mut ch = Channel::new(invite_only, true, cfg.quotas.channel_rate, now);
        ch.creator = Some(agent_id.clone());
        if invite_only {
            ch.invited.insert(agent_id.clone());
        }
        ch.members.push(id);
        ch.empty_since = None;
        self.channels.insert(channel.clone(), ch);
        if let Some(c) = self.conns.get_mut(&id) {
            c.channels.push(channel.clone());
        }
        let joined = ServerMsg::Joined {
            channel: channel.as_str(),
            agents: vec![agent_id.as_str()],
        };
        self.send_msg(id, &joined, fx);
        fx.logs.push((
            "create_channel",
            json!({"conn": id, "agent": agent_id.as_str(), "channel": channel.as_str(),
                   "invite_only": invite_only, "channels": self.channels.len()}),
        ));
        Ok(())
    }

    fn handle_invite(
        &mut self,
        cfg: &HubConfig,
        id: ConnId,
        channel: ChannelName,
        target: AgentId,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let inviter = self.agent_of(id)?.id.clone();
        let ch = self
            .channels
            .get(&channel)
            .ok_or_else(|| not_found(&channel))?;
        if !ch.members.contains(&id) {
            return Err(Refusal::new(
                ErrorCode::NotInvited,
                format!("You must be a member of {} to invite", channel.as_str()),
            ));
        }
        if !ch.invited.contains(&target) && ch.invited.len() >= cfg.quotas.max_invites {
            return Err(Refusal::new(
                ErrorCode::LimitReached,
                format!(
                    "{} has its maximum of {} invitations",
                    channel.as_str(),
                    cfg.quotas.max_invites
                ),
            ));
        }
        // An invitation tells the invitee with a MSG: it costs like one.
        let new = !ch.invited.contains(&target);
        self.charge(cfg, id, true)?;
        if new {
            self.store
                .append(&Record::Invite {
                    channel: channel.as_str(),
                    agent: target.as_str(),
                })
                .map_err(|e| not_saved(&e, fx))?;
        }
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.invited.insert(target.clone());
        }
        fx.logs.push((
            "invite",
            json!({"conn": id, "agent": inviter.as_str(), "channel": channel.as_str(), "invited": target.as_str()}),
        ));
        if let Some(&dest) = self.agents.get(&target) {
            let content = format!("You have been invited to {}", channel.as_str());
            let msg = ServerMsg::Msg {
                from: inviter.as_str(),
                to: target.as_str(),
                content: &content,
                sig: None,
                sig_ts: None,
                replay: false,
            };
            self.send_msg(dest, &msg, fx);
        }
        Ok(())
    }

    /// Removes every doomed connection, telling its channels. Telling them
    /// may doom more peers (their outboxes are full too), hence the worklist.
    fn reap(&mut self, fx: &mut Effects) {
        while let Some((id, reason)) = fx.doomed.pop() {
            if self.ghost_instead(id, reason, fx) {
                continue;
            }
            let Some(conn) = self.conns.remove(&id) else {
                continue;
            };
            // A mirror's node logs it; a ghost was logged when it ended.
            let mirror = conn.origin.is_some() || conn.ghost;
            self.forget_mirror(&conn.origin);
            if let Some(s) = conn.stream {
                if !fx.kicked.contains(&id) {
                    fx.shutdown.push(s);
                }
            }
            let agent = conn.agent.as_ref().map(|a| a.id.clone());
            if let Some(aid) = &agent {
                if self.agents.get(aid) == Some(&id) {
                    self.agents.remove(aid);
                }
            }
            for name in &conn.channels {
                self.remove_member(name, id);
                if let Some(aid) = &agent {
                    self.tell_left(name, aid.as_str(), fx);
                }
            }
            if mirror {
                continue;
            }
            fx.logs.push((
                "disconnect",
                json!({"conn": id, "agent": agent.as_ref().map(|a| a.as_str()),
                       "name": conn.agent.as_ref().map(|a| a.name.as_str()), "reason": reason,
                       "refusals": conn.refusals}),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    //! In-process tests of the handlers over channels, no sockets.
    use super::*;
    use crate::relay::identity::Identity;
    use std::sync::mpsc::{sync_channel, Receiver};

    fn config(burst: f64) -> HubConfig {
        HubConfig {
            server_name: "test".into(),
            buffer_size: 3,
            rate_burst: burst,
            rate_per_sec: 0.0,
            log_messages: false,
            trust: TrustConfig::default(),
            quotas: Quotas::for_rate(Rate::new(burst, 0.0)),
        }
    }

    fn hub(burst: f64) -> Hub {
        Hub::new(config(burst), 42)
    }

    fn conn(h: &Hub, cap: usize) -> (ConnId, Receiver<Outgoing>) {
        let (tx, rx) = sync_channel(cap);
        (h.register(tx, None, None), rx)
    }

    fn keyed_identify(h: &Hub, id: ConnId, rx: &Receiver<Outgoing>, key: &Identity) -> String {
        let m = json!({"type":"IDENTIFY","name":"k","pubkey":key.pubkey}).to_string();
        send(h, id, &m);
        let v = drain(rx);
        assert_eq!(v[0]["type"], "WELCOME", "{v:?}");
        v[0]["agent_id"].as_str().unwrap_or_default().to_string()
    }

    fn signed(to: &str, content: &str, key: &Identity, ts: u64) -> String {
        let text = signing::msg_signing_text(to, content, Some(ts));
        json!({"type":"MSG","to":to,"content":content,"ts":ts,"sig":key.sign(&text)}).to_string()
    }

    #[test]
    fn keyed_msgs_must_be_signed_fresh_and_new() {
        let h = hub(100.0);
        let key = Identity::generate("k").unwrap();
        let (a, ra) = conn(&h, 64);
        let (b, rb) = conn(&h, 64);
        let aid = keyed_identify(&h, a, &ra, &key);
        let bid = identify(&h, b, &rb);
        send(&h, a, r##"{"type":"JOIN","channel":"#general"}"##);
        send(&h, b, r##"{"type":"JOIN","channel":"#general"}"##);
        drain(&ra);
        drain(&rb);
        // Unsigned, to the channel and as a DM: refused, nothing delivered.
        send(&h, a, r##"{"type":"MSG","to":"#general","content":"x"}"##);
        send(
            &h,
            a,
            &json!({"type":"MSG","to":bid,"content":"x"}).to_string(),
        );
        let got = drain(&ra);
        assert_eq!(got.len(), 2);
        assert!(
            got.iter().all(|v| v["code"] == "SIGNATURE_REQUIRED"),
            "{got:?}"
        );
        assert!(drain(&rb).is_empty());
        // Signed by another key.
        let other = Identity::generate("o").unwrap();
        send(&h, a, &signed("#general", "forged", &other, now_ms()));
        assert_eq!(drain(&ra)[0]["code"], "SIGNATURE_REQUIRED");
        // Too old.
        send(&h, a, &signed("#general", "old", &key, now_ms() - 301_000));
        assert_eq!(drain(&ra)[0]["code"], "TIMESTAMP_OUT_OF_WINDOW");
        // Good, then the same frame again.
        let t = now_ms() - 5;
        let frame = signed("#general", "hello", &key, t);
        send(&h, a, &frame);
        let got = drain(&rb);
        assert_eq!(got[0]["from"], json!(aid));
        assert_eq!(got[0]["sig_ts"], json!(t));
        assert!(got[0]["ts"].as_u64().unwrap() > t, "relay clock: {got:?}");
        drain(&ra);
        send(&h, a, &frame);
        assert_eq!(drain(&ra)[0]["code"], "REPLAY_DETECTED");
        assert!(drain(&rb).is_empty());
    }

    #[test]
    fn a_proven_connection_displaces_an_unproven_one() {
        let h = hub(100.0);
        let key = Identity::generate("k").unwrap();
        let (squat, rs) = conn(&h, 64);
        let aid = keyed_identify(&h, squat, &rs, &key);
        // The owner, 0.3.0-style: refused while the squatter holds the id.
        let (owner, ro) = conn(&h, 64);
        send(
            &h,
            owner,
            &json!({"type":"IDENTIFY","name":"o","pubkey":key.pubkey}).to_string(),
        );
        assert_eq!(drain(&ro)[0]["code"], "INVALID_MSG");
        // With `prove`: CHALLENGE, answer, WELCOME verified; squatter out.
        send(
            &h,
            owner,
            &json!({"type":"IDENTIFY","name":"o","pubkey":key.pubkey,"prove":true}).to_string(),
        );
        let ch = drain(&ro).remove(0);
        assert_eq!(ch["type"], "CHALLENGE");
        let ts = now_ms();
        let text = format!(
            "AGENTCHAT_AUTH|{}|{}|{ts}",
            ch["nonce"].as_str().unwrap(),
            ch["challenge_id"].as_str().unwrap()
        );
        let answer = json!({"type":"VERIFY_IDENTITY","challenge_id":ch["challenge_id"],"signature":key.sign(&text),"timestamp":ts});
        send(&h, owner, &answer.to_string());
        let w = drain(&ro).remove(0);
        assert_eq!(
            (w["type"].as_str(), w["verified"].as_bool()),
            (Some("WELCOME"), Some(true))
        );
        assert_eq!(w["agent_id"], json!(aid));
        assert_eq!(drain(&rs)[0]["code"], "SESSION_DISPLACED");
        assert_eq!(h.connections(), 1);
        // Twice: already identified.
        send(&h, owner, &answer.to_string());
        assert_eq!(drain(&ro)[0]["code"], "INVALID_MSG");
    }

    #[test]
    fn quotas_refuse_with_codes() {
        let mut cfg = config(1000.0);
        cfg.quotas.max_channels = 3;
        cfg.quotas.max_invites = 1;
        let h = Hub::new(cfg, 1);
        let (a, ra) = conn(&h, 64);
        identify(&h, a, &ra);
        send(&h, a, r##"{"type":"CREATE_CHANNEL","channel":"#one"}"##);
        send(&h, a, r##"{"type":"CREATE_CHANNEL","channel":"#two"}"##);
        let got = drain(&ra);
        assert_eq!(got[0]["type"], "JOINED");
        assert_eq!(got[1]["code"], "LIMIT_REACHED");
        send(
            &h,
            a,
            r##"{"type":"INVITE","channel":"#one","agent":"@x1"}"##,
        );
        send(
            &h,
            a,
            r##"{"type":"INVITE","channel":"#one","agent":"@x2"}"##,
        );
        let got = drain(&ra);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["code"], "LIMIT_REACHED");
    }

    fn send(h: &Hub, id: ConnId, text: &str) {
        match ClientMsg::parse(text) {
            Ok(m) => h.handle(id, m),
            Err(r) => panic!("{text}: {r:?}"),
        }
    }

    fn drain(rx: &Receiver<Outgoing>) -> Vec<Value> {
        rx.try_iter()
            .filter_map(|o| match o {
                Outgoing::Text(t) => serde_json::from_str(t.as_str()).ok(),
                _ => None,
            })
            .collect()
    }

    fn identify(h: &Hub, id: ConnId, rx: &Receiver<Outgoing>) -> String {
        send(h, id, r#"{"type":"IDENTIFY","name":"t"}"#);
        let v = drain(rx);
        assert_eq!(v[0]["type"], "WELCOME");
        v[0]["agent_id"].as_str().unwrap_or_default().to_string()
    }

    #[test]
    fn channel_messages_reach_members_and_replay_in_order() {
        let h = hub(100.0);
        let (a, ra) = conn(&h, 64);
        let (b, rb) = conn(&h, 64);
        identify(&h, a, &ra);
        let bid = identify(&h, b, &rb);
        send(&h, a, r##"{"type":"JOIN","channel":"#general"}"##);
        for i in 0..5 {
            send(
                &h,
                a,
                &format!(r##"{{"type":"MSG","to":"#general","content":"m{i}"}}"##),
            );
        }
        let got = drain(&ra);
        assert_eq!(got[0]["type"], "JOINED");
        assert_eq!(got.len(), 6);
        send(&h, b, r##"{"type":"JOIN","channel":"#general"}"##);
        let got = drain(&rb);
        assert_eq!(got[0]["type"], "JOINED");
        let replay: Vec<_> = got[1..].iter().map(|v| v["content"].clone()).collect();
        assert_eq!(replay, vec![json!("m2"), json!("m3"), json!("m4")]);
        assert!(got[1..].iter().all(|v| v["replay"] == json!(true)));
        let seen = drain(&ra);
        assert_eq!(seen[0]["type"], "AGENT_JOINED");
        assert_eq!(seen[0]["agent"], json!(bid));
    }

    #[test]
    fn a_full_outbox_drops_that_peer_only() {
        let h = hub(1000.0);
        let (a, ra) = conn(&h, 1000);
        let (slow, rs) = conn(&h, 4);
        identify(&h, a, &ra);
        identify(&h, slow, &rs);
        send(&h, slow, r##"{"type":"JOIN","channel":"#general"}"##);
        send(&h, a, r##"{"type":"JOIN","channel":"#general"}"##);
        for i in 0..10 {
            send(
                &h,
                a,
                &format!(r##"{{"type":"MSG","to":"#general","content":"m{i}"}}"##),
            );
        }
        let got = drain(&ra);
        let msgs = got.iter().filter(|v| v["type"] == "MSG").count();
        assert_eq!(msgs, 10);
        assert!(got.iter().any(|v| v["type"] == "AGENT_LEFT"));
        assert_eq!(h.connections(), 1);
    }

    #[test]
    fn rate_limit_burst_then_refuse() {
        let h = hub(2.0);
        let (a, ra) = conn(&h, 64);
        identify(&h, a, &ra);
        send(&h, a, r##"{"type":"JOIN","channel":"#general"}"##);
        for _ in 0..3 {
            send(&h, a, r##"{"type":"MSG","to":"#general","content":"x"}"##);
        }
        let got = drain(&ra);
        assert_eq!(got.iter().filter(|v| v["type"] == "MSG").count(), 2);
        assert_eq!(
            got.last().map(|v| v["code"].clone()),
            Some(json!("RATE_LIMITED"))
        );
    }
}
