//! The relay's shared state: connections, agents, channels with their
//! invite lists and replay rings, and the handlers that turn one validated
//! [`ClientMsg`] into messages queued on outboxes. It never touches a socket:
//! it only `try_send`s to bounded outboxes under its lock, and does the few
//! blocking things (logging, shutting a dropped peer's socket) after
//! unlocking. A peer whose outbox is full is dropped, never waited for.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::frame::{ServerFrame, SharedStream};
use super::handle_proposal::{self, Actor};
use super::outbox::{Outgoing, SendQueue};
use super::proposals::ProposalStore;
use super::protocol::{
    AgentId, AgentName, ChannelInfo, ChannelName, ClientMsg, ErrorCode, Refusal, ServerMsg, Target,
};
use super::{identity, signing};
use crate::ratelimit::{Rate, TokenBucket};
use crate::util::{log_event, now_ms};

/// Channels that exist from startup (0.3.0 creates these two).
pub const DEFAULT_CHANNELS: [&str; 2] = ["#general", "#agents"];
/// Caps so no client can grow server memory without bound.
const MAX_CHANNELS: usize = 10_000;
const MAX_INVITES_PER_CHANNEL: usize = 10_000;

pub type ConnId = u64;

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub server_name: String,
    /// Replay ring length per channel (`--buffer-size`).
    pub buffer_size: usize,
    pub rate_burst: f64,
    pub rate_per_sec: f64,
    pub log_messages: bool,
}

struct Agent {
    id: AgentId,
    name: AgentName,
    /// The PEM sent with IDENTIFY (a valid Ed25519 key): signatures on this
    /// agent's messages are verified against it (issue 7).
    pubkey: Option<String>,
}

struct Conn {
    outbox: Box<dyn SendQueue>,
    /// Shut down when the hub drops this peer, waking its reader and writer.
    /// `None` in in-process tests.
    stream: Option<SharedStream>,
    agent: Option<Agent>,
    channels: Vec<ChannelName>,
    bucket: TokenBucket,
}

/// A channel message kept for replay to later joiners.
struct Stored {
    from: AgentId,
    content: String,
    sig: Option<String>,
    ts: u64,
}

struct Channel {
    invite_only: bool,
    invited: HashSet<AgentId>,
    /// Member connections, in no particular order.
    members: Vec<ConnId>,
    replay: VecDeque<Stored>,
}

impl Channel {
    fn new(invite_only: bool) -> Self {
        Channel {
            invite_only,
            invited: HashSet::new(),
            members: Vec::new(),
            replay: VecDeque::new(),
        }
    }
}

#[derive(Default)]
struct State {
    next_id: ConnId,
    conns: HashMap<ConnId, Conn>,
    agents: HashMap<AgentId, ConnId>,
    channels: BTreeMap<ChannelName, Channel>,
    rng: u64,
    proposals: ProposalStore,
}

/// Work left for after the lock is released, and peers to drop.
#[derive(Default)]
struct Effects {
    doomed: Vec<(ConnId, &'static str)>,
    shutdown: Vec<SharedStream>,
    logs: Vec<(&'static str, Value)>,
}

pub struct Hub {
    cfg: HubConfig,
    state: Mutex<State>,
}

impl Hub {
    pub fn new(cfg: HubConfig, seed: u64) -> Hub {
        let mut st = State {
            rng: seed | 1,
            ..State::default()
        };
        for name in DEFAULT_CHANNELS {
            let name = ChannelName::parse(name).expect("default channel names are valid");
            st.channels.insert(name, Channel::new(false));
        }
        Hub {
            cfg,
            state: Mutex::new(st),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a handler must not take every other connection down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection; messages for it go to `outbox`.
    pub fn register(
        &self,
        outbox: impl SendQueue + 'static,
        stream: Option<SharedStream>,
    ) -> ConnId {
        let mut st = self.lock();
        st.next_id += 1;
        let id = st.next_id;
        let bucket = TokenBucket::full(
            Rate::new(self.cfg.rate_burst, self.cfg.rate_per_sec),
            Instant::now(),
        );
        st.conns.insert(
            id,
            Conn {
                outbox: Box::new(outbox),
                stream,
                agent: None,
                channels: Vec::new(),
                bucket,
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
            if let Err(r) = st.dispatch(&self.cfg, id, msg, &mut fx) {
                let text = ServerMsg::from(&r).encode(now_ms());
                st.send(id, Outgoing::Text(text.into()), &mut fx);
            }
            st.reap(&mut fx);
        }
        fx.finish();
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
        fx.finish();
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
        self.lock().conns.len()
    }
}

impl Effects {
    fn finish(self) {
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
        self.send(id, Outgoing::Text(msg.encode(now_ms()).into()), fx);
    }

    /// Queues one already-encoded frame on every member of `members`.
    fn broadcast(&self, members: &[ConnId], text: &ServerFrame, fx: &mut Effects) {
        for m in members {
            self.send(*m, Outgoing::Text(text.clone()), fx);
        }
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

    fn dispatch(
        &mut self,
        cfg: &HubConfig,
        id: ConnId,
        msg: ClientMsg,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        match msg {
            ClientMsg::Identify { name, pubkey } => self.handle_identify(cfg, id, name, pubkey, fx),
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
            } => self.handle_create(id, channel, invite_only, fx),
            ClientMsg::Invite { channel, agent } => self.handle_invite(id, channel, agent, fx),
            ClientMsg::Ping => {
                self.send_msg(id, &ServerMsg::Pong {}, fx);
                Ok(())
            }
            ClientMsg::Proposal { req, raw } => self.handle_proposal(id, req, raw, fx),
        }
    }

    /// PROPOSAL / ACCEPT / REJECT / COMPLETE / DISPUTE (issue 7): parsed,
    /// verified and applied by `handle_proposal`; here only the lookups and
    /// the delivery: to the other party if connected, and echoed to the actor.
    fn handle_proposal(
        &mut self,
        id: ConnId,
        req: handle_proposal::Request,
        raw: Map<String, Value>,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let kind = req.kind();
        let agent = self.agent_of(id)?;
        let (me, pubkey) = (agent.id.clone(), agent.pubkey.clone());
        let actor = Actor {
            id: me.as_str(),
            pubkey: pubkey.as_deref(),
        };
        let agents = &self.agents;
        let online = |a: &str| AgentId::parse(a).is_some_and(|a| agents.contains_key(&a));
        let routed =
            handle_proposal::handle(&mut self.proposals, actor, req, &raw, online, now_ms())
                .inspect_err(|r| {
                    if matches!(r, handle_proposal::Refused::InvalidSignature(_)) {
                        fx.logs.push((
                            "sig_verification_failed",
                            json!({"conn": id, "agent": me.as_str(), "msg_type": kind}),
                        ));
                    }
                })?;
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

    fn handle_identify(
        &mut self,
        cfg: &HubConfig,
        id: ConnId,
        name: AgentName,
        pubkey: Option<String>,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        match self.conns.get(&id) {
            None => return Ok(()),
            Some(c) if c.agent.is_some() => {
                return Err(Refusal::invalid("Already identified"));
            }
            Some(_) => {}
        }
        let agent_id = match &pubkey {
            Some(pem) => {
                let aid = AgentId::from_pubkey(pem);
                if self.agents.contains_key(&aid) {
                    return Err(Refusal::invalid(
                        "An agent with this identity is already connected",
                    ));
                }
                aid
            }
            None => loop {
                let aid = AgentId::ephemeral(self.next_random());
                if !self.agents.contains_key(&aid) {
                    break aid;
                }
            },
        };
        fx.logs.push((
            "identify",
            json!({"conn": id, "agent": agent_id.as_str(), "name": name.as_str(), "pubkey": pubkey.is_some()}),
        ));
        self.agents.insert(agent_id.clone(), id);
        let welcome = ServerMsg::Welcome {
            agent_id: agent_id.as_str(),
            server: &cfg.server_name,
        }
        .encode(now_ms());
        if let Some(c) = self.conns.get_mut(&id) {
            c.agent = Some(Agent {
                id: agent_id,
                name,
                pubkey,
            });
        }
        self.send(id, Outgoing::Text(welcome.into()), fx);
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
            .encode(now_ms())
            .into();
            self.broadcast(&ch.members, &text, fx);
        }
        if let Some(ch) = self.channels.get_mut(&channel) {
            if !already {
                ch.members.push(id);
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

    fn handle_leave(
        &mut self,
        id: ConnId,
        channel: ChannelName,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let agent_id = self.agent_of(id)?.id.clone();
        let ch = self
            .channels
            .get_mut(&channel)
            .ok_or_else(|| not_found(&channel))?;
        let was_member = match ch.members.iter().position(|m| *m == id) {
            Some(i) => {
                ch.members.swap_remove(i);
                true
            }
            None => false,
        };
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
            .encode(now_ms())
            .into();
            self.broadcast(&ch.members, &text, fx);
        }
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
        let conn = self.conns.get_mut(&id).ok_or_else(auth_required)?;
        let Some(agent) = conn.agent.as_ref() else {
            return Err(auth_required());
        };
        let from = agent.id.clone();
        let pubkey = agent.pubkey.clone();
        if !conn
            .bucket
            .try_take(Instant::now(), Rate::new(cfg.rate_burst, cfg.rate_per_sec))
        {
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                "Rate limit exceeded; slow down",
            ));
        }
        // Beyond 0.3.0 (issue 7): a signature from an agent whose pubkey we
        // know must verify over what the protocol says MSG signs.
        if let (Some(sig), Some(pem)) = (&sig, &pubkey) {
            let text = signing::msg_signing_text(to.as_str(), &content, client_ts);
            let ok = identity::parse_pubkey(pem).is_ok_and(|k| identity::verify(&k, &text, sig));
            if !ok {
                fx.logs.push((
                    "sig_verification_failed",
                    json!({"conn": id, "agent": from.as_str(), "msg_type": "MSG"}),
                ));
                return Err(Refusal::new(
                    ErrorCode::InvalidSignature,
                    "MSG signature does not verify against your pubkey \
                     (it signs JSON.stringify({to, content, ts}) with the ts sent)",
                ));
            }
        }
        // A signature covers the client's `ts`, so a signed message keeps it;
        // otherwise the relay stamps its own clock.
        let ts = match (&sig, client_ts) {
            (Some(_), Some(t)) => t,
            _ => now_ms(),
        };
        let text: ServerFrame = ServerMsg::Msg {
            from: from.as_str(),
            to: to.as_str(),
            content: &content,
            sig: sig.as_deref(),
            replay: false,
        }
        .encode(ts)
        .into();
        if cfg.log_messages {
            fx.logs.push((
                "msg",
                json!({"from": from.as_str(), "to": to.as_str(), "content": &content}),
            ));
        }
        match &to {
            Target::Channel(name) => {
                let ch = self.channels.get(name).ok_or_else(|| not_found(name))?;
                if !ch.members.contains(&id) {
                    return Err(Refusal::new(
                        ErrorCode::NotInvited,
                        format!("You are not a member of {}; JOIN it first", name.as_str()),
                    ));
                }
                self.broadcast(&ch.members, &text, fx);
                if cfg.buffer_size > 0 {
                    if let Some(ch) = self.channels.get_mut(name) {
                        if ch.replay.len() >= cfg.buffer_size {
                            ch.replay.pop_front();
                        }
                        ch.replay.push_back(Stored {
                            from,
                            content,
                            sig,
                            ts,
                        });
                    }
                }
            }
            Target::Agent(target) => {
                let Some(&dest) = self.agents.get(target) else {
                    return Err(Refusal::new(
                        ErrorCode::AgentNotFound,
                        format!("Agent {} not found", target.as_str()),
                    ));
                };
                self.send(dest, Outgoing::Text(text.clone()), fx);
                if dest != id {
                    self.send(id, Outgoing::Text(text), fx);
                }
            }
        }
        Ok(())
    }

    fn handle_create(
        &mut self,
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
        if self.channels.len() >= MAX_CHANNELS {
            return Err(Refusal::invalid("Too many channels on this relay"));
        }
        let mut ch = Channel::new(invite_only);
        if invite_only {
            ch.invited.insert(agent_id.clone());
        }
        ch.members.push(id);
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
            json!({"conn": id, "agent": agent_id.as_str(), "channel": channel.as_str(), "invite_only": invite_only}),
        ));
        Ok(())
    }

    fn handle_invite(
        &mut self,
        id: ConnId,
        channel: ChannelName,
        target: AgentId,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let inviter = self.agent_of(id)?.id.clone();
        let ch = self
            .channels
            .get_mut(&channel)
            .ok_or_else(|| not_found(&channel))?;
        if !ch.members.contains(&id) {
            return Err(Refusal::new(
                ErrorCode::NotInvited,
                format!("You must be a member of {} to invite", channel.as_str()),
            ));
        }
        if !ch.invited.contains(&target) {
            if ch.invited.len() >= MAX_INVITES_PER_CHANNEL {
                return Err(Refusal::invalid("Invite list is full"));
            }
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
            let Some(conn) = self.conns.remove(&id) else {
                continue;
            };
            if let Some(s) = conn.stream {
                fx.shutdown.push(s);
            }
            let agent = conn.agent.as_ref().map(|a| a.id.clone());
            if let Some(aid) = &agent {
                if self.agents.get(aid) == Some(&id) {
                    self.agents.remove(aid);
                }
            }
            for name in &conn.channels {
                if let Some(ch) = self.channels.get_mut(name) {
                    ch.members.retain(|m| *m != id);
                }
                if let Some(aid) = &agent {
                    self.tell_left(name, aid.as_str(), fx);
                }
            }
            fx.logs.push((
                "disconnect",
                json!({"conn": id, "agent": agent.as_ref().map(|a| a.as_str()), "name": conn.agent.as_ref().map(|a| a.name.as_str()), "reason": reason}),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    //! In-process tests of the handlers over channels, no sockets.
    use super::*;
    use std::sync::mpsc::{sync_channel, Receiver};

    fn hub(burst: f64) -> Hub {
        Hub::new(
            HubConfig {
                server_name: "test".into(),
                buffer_size: 3,
                rate_burst: burst,
                rate_per_sec: 0.0,
                log_messages: false,
            },
            42,
        )
    }

    fn conn(h: &Hub, cap: usize) -> (ConnId, Receiver<Outgoing>) {
        let (tx, rx) = sync_channel(cap);
        (h.register(tx, None), rx)
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
