//! Work proposals (AgentChat 0.3.0's PROPOSAL / ACCEPT / REJECT / COMPLETE /
//! DISPUTE): an in-memory store and the lifecycle
//! pending → accepted | rejected | expired; accepted → completed | disputed.
//!
//! Pure: every call takes the current time, nothing here blocks, spawns or
//! does I/O beyond drawing random id bytes. Expiry is applied lazily when a
//! proposal is touched, and `sweep` (called periodically by whoever owns the
//! store, e.g. the relay's hub loop) expires and forgets old ones; there is no
//! timer per proposal. Bounded (issue 12): at most `max_total` held, at most
//! `max_pending_per_agent` pending from one proposer, a default expiry for
//! proposals that set none, and finished or expired ones are evicted first
//! when the store is full. It also remembers the signatures of accepted
//! PROPOSALs, so a captured one cannot be resent. Not here: verifying
//! signatures (the caller does, before it calls in), parsing
//! (`proposal_wire`), or encoding frames (`protocol::ServerMsg`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use super::protocol::ServerMsg;

/// How long a finished proposal (or one past its expiry) is kept for late
/// lookups before `sweep` forgets it. 0.3.0 keeps expired ones for 24 hours.
pub const RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// How often `sweep_if_due` actually sweeps (0.3.0 sweeps once a minute).
pub const SWEEP_EVERY_MS: u64 = 60 * 1000;
/// Default bounds (`workbench relay --max-proposals`, `--max-pending`,
/// `--proposal-expiry`).
pub const MAX_PROPOSALS: usize = 10_000;
pub const MAX_PENDING_PER_AGENT: usize = 100;
pub const DEFAULT_EXPIRY_SECS: u64 = 3600;
/// Accepted PROPOSAL signatures remembered, oldest forgotten first.
const USED_SIGS_PER_PROPOSAL: usize = 10;

/// How much the store may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Proposals held in total, in any state.
    pub max_total: usize,
    /// Pending proposals one agent may have sent and not yet had answered.
    pub max_pending_per_agent: usize,
    /// Expiry given to a proposal that sets none (or 0); 0 keeps 0.3.0's
    /// "never".
    pub default_expiry_secs: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_total: MAX_PROPOSALS,
            max_pending_per_agent: MAX_PENDING_PER_AGENT,
            default_expiry_secs: DEFAULT_EXPIRY_SECS,
        }
    }
}

/// Why an action on a proposal was refused. On the wire each is an ERROR with
/// code `INVALID_PROPOSAL` and `reason()` as its message, as 0.3.0 sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposalError {
    NotFound,
    /// Accept or reject of a proposal that is no longer pending.
    NotPending(Status),
    /// Only the recipient may accept or reject.
    NotRecipient,
    /// Accept or reject after the proposal's `expires` passed.
    Expired,
    /// Complete or dispute of a proposal that is not accepted.
    NotAccepted(Status),
    /// Only the two parties may complete or dispute.
    NotParty,
    /// The store is full of live proposals (beyond 0.3.0, which has no cap).
    TooMany,
    /// The proposer has `max_pending_per_agent` pending proposals.
    TooManyPending,
    /// This exact signed PROPOSAL was accepted before (a replay).
    Replayed,
}

impl ProposalError {
    /// The reason named on the wire (AGENTCHAT.md, "Behaviour").
    pub fn reason(&self) -> &'static str {
        match self {
            ProposalError::NotFound => "PROPOSAL_NOT_FOUND",
            ProposalError::NotPending(_) => "PROPOSAL_NOT_PENDING",
            ProposalError::NotRecipient => "NOT_PROPOSAL_RECIPIENT",
            ProposalError::Expired => "PROPOSAL_EXPIRED",
            ProposalError::NotAccepted(_) => "PROPOSAL_NOT_ACCEPTED",
            ProposalError::NotParty => "NOT_PROPOSAL_PARTY",
            ProposalError::TooMany => "TOO_MANY_PROPOSALS",
            ProposalError::TooManyPending => "TOO_MANY_PENDING_PROPOSALS",
            ProposalError::Replayed => "PROPOSAL_REPLAYED",
        }
    }
}

impl fmt::Display for ProposalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ProposalError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Accepted,
    Rejected,
    Expired,
    Completed,
    Disputed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Completed => "completed",
            Status::Disputed => "disputed",
        }
    }
}

/// A signed acceptance by the recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Acceptance {
    pub sig: String,
    pub payment_code: Value,
}

/// A signed closing act by either party: `note` is the proof (complete) or
/// the reason (dispute).
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub by: String,
    pub at: u64,
    pub sig: String,
    pub note: Value,
}

/// Where a proposal is in its life, with what each step recorded. A
/// completed or disputed proposal keeps its acceptance.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Pending,
    Expired,
    Rejected { sig: String, reason: Value },
    Accepted(Acceptance),
    Completed(Acceptance, Settlement),
    Disputed(Acceptance, Settlement),
}

impl State {
    pub fn status(&self) -> Status {
        match self {
            State::Pending => Status::Pending,
            State::Expired => Status::Expired,
            State::Rejected { .. } => Status::Rejected,
            State::Accepted(_) => Status::Accepted,
            State::Completed(..) => Status::Completed,
            State::Disputed(..) => Status::Disputed,
        }
    }
}

/// What a proposer sends, already checked by the protocol layer. `from` and
/// `to` are wire ids (`@k3f9x2ab`). The optional 0.3.0 fields are relayed
/// verbatim, so they stay JSON values (absent or falsy ones become null, as
/// 0.3.0 stores `x || null`).
#[derive(Debug, Clone)]
pub struct NewProposal {
    pub from: String,
    pub to: String,
    pub task: String,
    pub amount: Value,
    pub currency: Value,
    pub payment_code: Value,
    pub terms: Value,
    /// Seconds from now, as sent; `None` or 0 means it never expires.
    pub expires_in_secs: Option<f64>,
    pub sig: String,
}

#[derive(Debug, Clone)]
pub struct Proposal {
    pub id: String,
    pub from: String,
    pub to: String,
    pub task: String,
    pub amount: Value,
    pub currency: Value,
    pub payment_code: Value,
    pub terms: Value,
    /// Absolute Unix ms, or `None` for never.
    pub expires: Option<u64>,
    pub created_at: u64,
    pub updated_at: u64,
    pub sig: String,
    pub state: State,
}

impl Proposal {
    pub fn status(&self) -> Status {
        self.state.status()
    }

    fn is_past_expiry(&self, now: u64) -> bool {
        self.expires.is_some_and(|e| now > e)
    }

    /// Flips a pending proposal past its expiry to expired.
    fn refresh(&mut self, now: u64) {
        if self.state == State::Pending && self.is_past_expiry(now) {
            self.state = State::Expired;
            self.updated_at = now;
        }
    }

    fn is_party(&self, agent: &str) -> bool {
        self.from == agent || self.to == agent
    }

    /// The PROPOSAL message sent to the recipient and echoed to the proposer
    /// (the echo tells the proposer its id).
    pub fn proposal_msg(&self) -> ServerMsg<'_> {
        ServerMsg::Proposal {
            id: &self.id,
            from: &self.from,
            to: &self.to,
            task: &self.task,
            amount: &self.amount,
            currency: &self.currency,
            payment_code: &self.payment_code,
            terms: &self.terms,
            expires: self.expires,
            status: self.status().as_str(),
            created_at: self.created_at,
            sig: &self.sig,
        }
    }

    /// The ACCEPT / REJECT / COMPLETE / DISPUTE message reporting the latest
    /// transition (0.3.0's `formatProposalResponse`). `None` while pending
    /// or expired: nothing to report.
    pub fn response_msg(&self) -> Option<ServerMsg<'_>> {
        let (proposal_id, status, updated_at) =
            (self.id.as_str(), self.status().as_str(), self.updated_at);
        let (from, to) = (self.from.as_str(), self.to.as_str());
        Some(match &self.state {
            State::Pending | State::Expired => return None,
            State::Accepted(a) => ServerMsg::Accept {
                proposal_id,
                status,
                updated_at,
                from,
                to,
                payment_code: &a.payment_code,
                sig: &a.sig,
            },
            State::Rejected { sig, reason } => ServerMsg::Reject {
                proposal_id,
                status,
                updated_at,
                from,
                to,
                reason,
                sig,
            },
            State::Completed(_, s) => ServerMsg::Complete {
                proposal_id,
                status,
                updated_at,
                from,
                to,
                completed_by: &s.by,
                completed_at: s.at,
                proof: &s.note,
                sig: &s.sig,
            },
            State::Disputed(_, s) => ServerMsg::Dispute {
                proposal_id,
                status,
                updated_at,
                from,
                to,
                disputed_by: &s.by,
                disputed_at: s.at,
                reason: &s.note,
                sig: &s.sig,
            },
        })
    }

    /// [`Proposal::proposal_msg`] as frame text stamped with `ts`.
    pub fn proposal_frame(&self, ts: u64) -> String {
        self.proposal_msg().encode(ts)
    }

    /// [`Proposal::response_msg`] as frame text stamped with `ts`.
    pub fn response_frame(&self, ts: u64) -> Option<String> {
        self.response_msg().map(|m| m.encode(ts))
    }

    /// Finished, or past its expiry: evictable when the store is full.
    fn is_done(&self, now: u64) -> bool {
        match self.status() {
            Status::Pending => self.is_past_expiry(now),
            Status::Accepted => false,
            _ => true,
        }
    }
}

impl Proposal {
    /// The whole proposal as a journal record (relay/store.rs): its fields,
    /// status and every signed step so far.
    pub fn to_record(&self) -> Value {
        let accept = |a: &Acceptance| json!({"sig": a.sig, "payment_code": a.payment_code});
        let settle = |s: &Settlement| json!({"by": s.by, "at": s.at, "sig": s.sig, "note": s.note});
        let state = match &self.state {
            State::Pending => json!({"status": "pending"}),
            State::Expired => json!({"status": "expired"}),
            State::Rejected { sig, reason } => {
                json!({"status": "rejected", "sig": sig, "reason": reason})
            }
            State::Accepted(a) => json!({"status": "accepted", "accept": accept(a)}),
            State::Completed(a, s) => {
                json!({"status": "completed", "accept": accept(a), "settle": settle(s)})
            }
            State::Disputed(a, s) => {
                json!({"status": "disputed", "accept": accept(a), "settle": settle(s)})
            }
        };
        json!({"id": self.id, "from": self.from, "to": self.to, "task": self.task,
               "amount": self.amount, "currency": self.currency,
               "payment_code": self.payment_code, "terms": self.terms,
               "expires": self.expires, "created_at": self.created_at,
               "updated_at": self.updated_at, "sig": self.sig, "state": state})
    }

    /// The inverse of [`Proposal::to_record`]; `Err` names what is missing.
    pub fn from_record(v: &Value) -> Result<Proposal, String> {
        let s = |v: &Value, k: &str| -> Result<String, String> {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("proposal record without \"{k}\""))
        };
        let n = |v: &Value, k: &str| -> Result<u64, String> {
            v[k].as_u64()
                .ok_or_else(|| format!("proposal record without \"{k}\""))
        };
        let st = &v["state"];
        let accept = |st: &Value| -> Result<Acceptance, String> {
            let a = &st["accept"];
            Ok(Acceptance {
                sig: s(a, "sig")?,
                payment_code: a["payment_code"].clone(),
            })
        };
        let settle = |st: &Value| -> Result<Settlement, String> {
            let x = &st["settle"];
            Ok(Settlement {
                by: s(x, "by")?,
                at: n(x, "at")?,
                sig: s(x, "sig")?,
                note: x["note"].clone(),
            })
        };
        let state = match st["status"].as_str() {
            Some("pending") => State::Pending,
            Some("expired") => State::Expired,
            Some("rejected") => State::Rejected {
                sig: s(st, "sig")?,
                reason: st["reason"].clone(),
            },
            Some("accepted") => State::Accepted(accept(st)?),
            Some("completed") => State::Completed(accept(st)?, settle(st)?),
            Some("disputed") => State::Disputed(accept(st)?, settle(st)?),
            other => return Err(format!("proposal record with status {other:?}")),
        };
        Ok(Proposal {
            id: s(v, "id")?,
            from: s(v, "from")?,
            to: s(v, "to")?,
            task: s(v, "task")?,
            amount: v["amount"].clone(),
            currency: v["currency"].clone(),
            payment_code: v["payment_code"].clone(),
            terms: v["terms"].clone(),
            expires: v["expires"].as_u64(),
            created_at: n(v, "created_at")?,
            updated_at: n(v, "updated_at")?,
            sig: s(v, "sig")?,
            state,
        })
    }
}

/// `x || null`: JavaScript's falsy values become null.
pub fn or_null(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Value::Null,
        Some(Value::Number(n)) if n.as_f64().is_none_or(|f| f == 0.0) => Value::Null,
        Some(Value::String(s)) if s.is_empty() => Value::Null,
        Some(v) => v.clone(),
    }
}

/// A fresh id in 0.3.0's form: `prop_<ms in base 36>_<8 hex digits>`.
pub fn new_proposal_id(now: u64) -> String {
    let random = crate::util::random_hex(4).unwrap_or_else(|_| {
        // No /dev/urandom: still unique within this process.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        format!("{:08x}", COUNTER.fetch_add(1, Ordering::Relaxed) as u32)
    });
    format!("prop_{}_{random}", base36(now))
}

pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base-36 digits are ASCII")
}

/// All live proposals, by id.
#[derive(Debug, Default)]
pub struct ProposalStore {
    proposals: HashMap<String, Proposal>,
    last_sweep: u64,
    limits: StoreLimits,
    /// Signatures of accepted PROPOSALs, oldest first, and as a set.
    used_order: VecDeque<String>,
    used: HashSet<String>,
    /// The id the next `create` gives (a cluster node applying a record);
    /// `None`: a fresh random one.
    pub next_id: Option<String>,
}

impl ProposalStore {
    pub fn new(limits: StoreLimits) -> ProposalStore {
        ProposalStore {
            limits,
            ..ProposalStore::default()
        }
    }

    /// Remembers an accepted PROPOSAL's signature (bounded, oldest out).
    fn remember_sig(&mut self, sig: &str) {
        let cap = self
            .limits
            .max_total
            .saturating_mul(USED_SIGS_PER_PROPOSAL)
            .max(1);
        while self.used_order.len() >= cap {
            if let Some(old) = self.used_order.pop_front() {
                self.used.remove(&old);
            }
        }
        self.used.insert(sig.to_string());
        self.used_order.push_back(sig.to_string());
    }

    /// Makes room for one more: sweep, then evict finished or expired
    /// proposals, oldest first, before refusing.
    fn make_room(&mut self, now: u64) -> Result<(), ProposalError> {
        if self.proposals.len() < self.limits.max_total {
            return Ok(());
        }
        self.sweep(now);
        if self.proposals.len() < self.limits.max_total {
            return Ok(());
        }
        let mut done: Vec<(u64, String)> = self
            .proposals
            .values()
            .filter(|p| p.is_done(now))
            .map(|p| (p.updated_at, p.id.clone()))
            .collect();
        if done.is_empty() {
            return Err(ProposalError::TooMany);
        }
        done.sort_unstable();
        // Free a tenth at once, so a full store is not rescanned per create.
        let n = (self.limits.max_total / 10).clamp(1, done.len());
        for (_, id) in done.into_iter().take(n) {
            self.proposals.remove(&id);
        }
        Ok(())
    }

    /// How many proposals are held (live or kept for late lookups).
    pub fn len(&self) -> usize {
        self.proposals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.proposals.is_empty()
    }

    /// Stores a new pending proposal and returns it.
    pub fn create(&mut self, p: NewProposal, now: u64) -> Result<&Proposal, ProposalError> {
        if self.used.contains(&p.sig) {
            return Err(ProposalError::Replayed);
        }
        let pending = self
            .proposals
            .values()
            .filter(|q| q.from == p.from && q.status() == Status::Pending && !q.is_past_expiry(now))
            .count();
        if pending >= self.limits.max_pending_per_agent {
            return Err(ProposalError::TooManyPending);
        }
        self.make_room(now)?;
        // A cluster node applying a PROPOSAL uses the id its sender's node
        // drew (relay/hub/replica.rs), so every node stores the same one.
        let mut id = self.next_id.take().unwrap_or_else(|| new_proposal_id(now));
        while self.proposals.contains_key(&id) {
            id = new_proposal_id(now);
        }
        // `expires ? now + expires * 1000 : null`; a negative or fractional
        // value is honoured like 0.3.0 does (negative: already past). None
        // (or 0) gets the default expiry, unless that is 0 too.
        let default = self.limits.default_expiry_secs;
        let expires = p
            .expires_in_secs
            .filter(|s| *s != 0.0 && !s.is_nan())
            .or((default > 0).then_some(default as f64))
            .map(|s| (now as f64 + s * 1000.0).max(0.0) as u64);
        self.remember_sig(&p.sig);
        let proposal = Proposal {
            id: id.clone(),
            from: p.from,
            to: p.to,
            task: p.task,
            amount: or_null(Some(&p.amount)),
            currency: or_null(Some(&p.currency)),
            payment_code: or_null(Some(&p.payment_code)),
            terms: or_null(Some(&p.terms)),
            expires,
            created_at: now,
            updated_at: now,
            sig: p.sig,
            state: State::Pending,
        };
        Ok(self.proposals.entry(id).or_insert(proposal))
    }

    /// A proposal by id, with its expiry applied (for tests; the relay
    /// only reaches proposals through the transitions).
    #[cfg(test)]
    pub fn get(&mut self, id: &str, now: u64) -> Option<&Proposal> {
        let p = self.proposals.get_mut(id)?;
        p.refresh(now);
        Some(p)
    }

    fn pending_for_recipient(
        &mut self,
        id: &str,
        agent: &str,
        now: u64,
    ) -> Result<&mut Proposal, ProposalError> {
        let p = self.proposals.get_mut(id).ok_or(ProposalError::NotFound)?;
        p.refresh(now);
        // 0.3.0's order: existence, then status, then who is asking. An
        // expired proposal is named as such rather than as "not pending".
        match p.status() {
            Status::Pending => {}
            Status::Expired => return Err(ProposalError::Expired),
            other => return Err(ProposalError::NotPending(other)),
        }
        if p.to != agent {
            return Err(ProposalError::NotRecipient);
        }
        Ok(p)
    }

    fn accepted_for_party(
        &mut self,
        id: &str,
        agent: &str,
        now: u64,
    ) -> Result<(&mut Proposal, Acceptance), ProposalError> {
        let p = self.proposals.get_mut(id).ok_or(ProposalError::NotFound)?;
        p.refresh(now);
        let State::Accepted(acceptance) = &p.state else {
            return Err(ProposalError::NotAccepted(p.status()));
        };
        let acceptance = acceptance.clone();
        if !p.is_party(agent) {
            return Err(ProposalError::NotParty);
        }
        Ok((p, acceptance))
    }

    /// The recipient accepts a pending proposal.
    pub fn accept(
        &mut self,
        id: &str,
        agent: &str,
        sig: String,
        payment_code: Value,
        now: u64,
    ) -> Result<&Proposal, ProposalError> {
        let p = self.pending_for_recipient(id, agent, now)?;
        p.state = State::Accepted(Acceptance {
            sig,
            payment_code: or_null(Some(&payment_code)),
        });
        p.updated_at = now;
        Ok(p)
    }

    /// The recipient rejects a pending proposal.
    pub fn reject(
        &mut self,
        id: &str,
        agent: &str,
        sig: String,
        reason: Value,
        now: u64,
    ) -> Result<&Proposal, ProposalError> {
        let p = self.pending_for_recipient(id, agent, now)?;
        p.state = State::Rejected {
            sig,
            reason: or_null(Some(&reason)),
        };
        p.updated_at = now;
        Ok(p)
    }

    /// Either party marks an accepted proposal complete.
    pub fn complete(
        &mut self,
        id: &str,
        agent: &str,
        sig: String,
        proof: Value,
        now: u64,
    ) -> Result<&Proposal, ProposalError> {
        let (p, acceptance) = self.accepted_for_party(id, agent, now)?;
        p.state = State::Completed(acceptance, settlement(agent, sig, proof, now));
        p.updated_at = now;
        Ok(p)
    }

    /// Either party disputes an accepted proposal.
    pub fn dispute(
        &mut self,
        id: &str,
        agent: &str,
        sig: String,
        reason: Value,
        now: u64,
    ) -> Result<&Proposal, ProposalError> {
        let (p, acceptance) = self.accepted_for_party(id, agent, now)?;
        p.state = State::Disputed(acceptance, settlement(agent, sig, reason, now));
        p.updated_at = now;
        Ok(p)
    }

    /// The proposal with this id as stored (no expiry applied), for the
    /// journal.
    pub fn by_id(&self, id: &str) -> Option<&Proposal> {
        self.proposals.get(id)
    }

    /// Every proposal held, for a snapshot.
    pub fn iter(&self) -> impl Iterator<Item = &Proposal> {
        self.proposals.values()
    }

    /// Puts back a proposal read from the journal (replacing an older
    /// version of it), remembering its signature against replays. Past
    /// `max_total`, finished ones are evicted as `create` would.
    pub fn restore(&mut self, p: Proposal, now: u64) {
        if !self.used.contains(&p.sig) {
            self.remember_sig(&p.sig);
        }
        if !self.proposals.contains_key(&p.id) {
            let _ = self.make_room(now);
        }
        self.proposals.insert(p.id.clone(), p);
    }

    /// Undoes a change the journal could not record: puts `before` back
    /// (or forgets `id` if it did not exist).
    pub fn undo(&mut self, id: &str, before: Option<Proposal>) {
        match before {
            Some(p) => {
                self.proposals.insert(id.to_string(), p);
            }
            None => {
                self.proposals.remove(id);
            }
        }
    }

    /// Sweeps if the last sweep was `SWEEP_EVERY_MS` ago or more. The relay
    /// calls this whenever it handles a proposal message, so sweeping costs
    /// nothing while no one uses proposals (no timer thread, idle is idle),
    /// and the store is swept as often as it can grow.
    pub fn sweep_if_due(&mut self, now: u64) -> usize {
        if now.saturating_sub(self.last_sweep) < SWEEP_EVERY_MS {
            return 0;
        }
        self.sweep(now)
    }

    /// Expires pending proposals past their time and forgets proposals that
    /// ended (or expired) more than `RETENTION_MS` ago. Accepted proposals are
    /// kept until settled. Returns how many were forgotten.
    pub fn sweep(&mut self, now: u64) -> usize {
        self.last_sweep = now;
        let before = self.proposals.len();
        let cutoff = now.saturating_sub(RETENTION_MS);
        self.proposals.retain(|_, p| {
            p.refresh(now);
            match p.status() {
                Status::Pending | Status::Accepted => true,
                Status::Expired => p.expires.is_none_or(|e| e >= cutoff),
                Status::Rejected | Status::Completed | Status::Disputed => p.updated_at >= cutoff,
            }
        });
        before - self.proposals.len()
    }
}

fn settlement(agent: &str, sig: String, note: Value, now: u64) -> Settlement {
    Settlement {
        by: agent.to_string(),
        at: now,
        sig,
        note: or_null(Some(&note)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALICE: &str = "@aaaaaaaa";
    const BOB: &str = "@bbbbbbbb";
    const EVE: &str = "@eeeeeeee";
    const T0: u64 = 1_764_000_000_000;

    /// A store with 0.3.0's "no expiry means never" (no default expiry).
    fn legacy() -> ProposalStore {
        ProposalStore::new(StoreLimits {
            default_expiry_secs: 0,
            ..StoreLimits::default()
        })
    }

    fn offer(expires: Option<f64>) -> NewProposal {
        static N: AtomicU64 = AtomicU64::new(0);
        NewProposal {
            from: ALICE.into(),
            to: BOB.into(),
            task: "review the PR".into(),
            amount: json!(1.5),
            currency: json!("USDC"),
            payment_code: Value::Null,
            terms: json!(""),
            expires_in_secs: expires,
            sig: format!("sig-p{}", N.fetch_add(1, Ordering::Relaxed)),
        }
    }

    fn store_with(expires: Option<f64>) -> (ProposalStore, String) {
        let mut s = legacy();
        let id = s.create(offer(expires), T0).unwrap().id.clone();
        (s, id)
    }

    fn accepted() -> (ProposalStore, String) {
        let (mut s, id) = store_with(Some(300.0));
        s.accept(&id, BOB, "sig-a".into(), json!("pc"), T0 + 1)
            .unwrap();
        (s, id)
    }

    #[test]
    fn create_sets_the_0_3_0_fields() {
        let (mut s, id) = store_with(Some(300.0));
        assert!(id.starts_with("prop_"));
        let parts: Vec<&str> = id.split('_').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1], base36(T0));
        assert_eq!(parts[2].len(), 8);
        let p = s.get(&id, T0).unwrap();
        assert_eq!(p.status(), Status::Pending);
        assert_eq!(p.expires, Some(T0 + 300_000));
        let wire: Value = serde_json::from_str(&p.proposal_frame(T0)).unwrap();
        assert_eq!(wire["type"], "PROPOSAL");
        assert_eq!(wire["id"], id.as_str());
        assert_eq!(wire["from"], ALICE);
        assert_eq!(wire["to"], BOB);
        assert_eq!(wire["amount"], json!(1.5));
        assert_eq!(wire["payment_code"], Value::Null);
        assert_eq!(wire["terms"], Value::Null, "'' || null is null");
        assert_eq!(wire["status"], "pending");
        assert_eq!(wire["created_at"], T0);
        assert_eq!(wire["expires"], T0 + 300_000);
        assert!(wire["sig"].as_str().unwrap().starts_with("sig-p"));
        assert!(p.response_frame(T0).is_none());
    }

    /// The exact wire text, so key order and nulls are pinned.
    #[test]
    fn frames_pin_the_wire_text() {
        let (mut s, id) = store_with(Some(300.0));
        let p = s.get(&id, T0).unwrap();
        assert_eq!(
            p.proposal_frame(7),
            format!(
                r#"{{"type":"PROPOSAL","id":"{id}","from":"@aaaaaaaa","to":"@bbbbbbbb","task":"review the PR","amount":1.5,"currency":"USDC","payment_code":null,"terms":null,"expires":{},"status":"pending","created_at":{T0},"sig":"{}","ts":7}}"#,
                T0 + 300_000,
                p.sig
            )
        );
        let p = s
            .accept(&id, BOB, "sig-a".into(), Value::Null, T0 + 1)
            .unwrap();
        assert_eq!(
            p.response_frame(8).unwrap(),
            format!(
                r#"{{"type":"ACCEPT","proposal_id":"{id}","status":"accepted","updated_at":{},"from":"@aaaaaaaa","to":"@bbbbbbbb","payment_code":null,"sig":"sig-a","ts":8}}"#,
                T0 + 1
            )
        );
    }

    #[test]
    fn ids_are_unique() {
        let mut s = legacy();
        let ids: std::collections::HashSet<String> = (0..200)
            .map(|i| {
                let mut o = offer(None);
                o.from = format!("@p{}", i % 10);
                s.create(o, T0).unwrap().id.clone()
            })
            .collect();
        assert_eq!(ids.len(), 200);
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }

    #[test]
    fn no_expiry_for_zero_or_absent() {
        let (mut s, id) = store_with(Some(0.0));
        assert_eq!(s.get(&id, T0).unwrap().expires, None);
        let (mut s, id) = store_with(None);
        assert_eq!(s.get(&id, u64::MAX).unwrap().status(), Status::Pending);
    }

    #[test]
    fn recipient_accepts() {
        let (mut s, id) = store_with(Some(300.0));
        let p = s
            .accept(&id, BOB, "sig-a".into(), json!("pc"), T0 + 5)
            .unwrap();
        assert_eq!(p.status(), Status::Accepted);
        assert_eq!(p.updated_at, T0 + 5);
        let m: Value = serde_json::from_str(&p.response_frame(T0 + 100).unwrap()).unwrap();
        let kind = m["type"].as_str().unwrap();
        assert_eq!(kind, "ACCEPT");
        assert_eq!(m["proposal_id"], id.as_str());
        assert_eq!(m["status"], "accepted");
        assert_eq!(m["payment_code"], "pc");
        assert_eq!(m["sig"], "sig-a");
        assert_eq!(m["updated_at"], T0 + 5);
    }

    #[test]
    fn recipient_rejects() {
        let (mut s, id) = store_with(None);
        let p = s
            .reject(&id, BOB, "sig-r".into(), json!("too much"), T0 + 5)
            .unwrap();
        assert_eq!(p.status(), Status::Rejected);
        let m: Value = serde_json::from_str(&p.response_frame(T0 + 100).unwrap()).unwrap();
        let kind = m["type"].as_str().unwrap();
        assert_eq!(kind, "REJECT");
        assert_eq!(m["reason"], "too much");
        assert_eq!(m["sig"], "sig-r");
        // Without a reason: null, as 0.3.0 sends.
        let (mut s, id) = store_with(None);
        let p = s.reject(&id, BOB, "sig-r".into(), Value::Null, T0).unwrap();
        let m: Value = serde_json::from_str(&p.response_frame(T0).unwrap()).unwrap();
        assert_eq!(m["reason"], Value::Null);
    }

    #[test]
    fn only_the_recipient_accepts_or_rejects() {
        for who in [ALICE, EVE] {
            let (mut s, id) = store_with(None);
            let e = s.accept(&id, who, "x".into(), Value::Null, T0).unwrap_err();
            assert_eq!(e, ProposalError::NotRecipient);
            assert_eq!(e.reason(), "NOT_PROPOSAL_RECIPIENT");
            let e = s.reject(&id, who, "x".into(), Value::Null, T0).unwrap_err();
            assert_eq!(e, ProposalError::NotRecipient);
            assert_eq!(s.get(&id, T0).unwrap().status(), Status::Pending);
        }
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let mut s = legacy();
        let nf = ProposalError::NotFound;
        assert_eq!(
            s.accept("prop_x", BOB, "x".into(), Value::Null, T0)
                .unwrap_err(),
            nf
        );
        assert_eq!(
            s.reject("prop_x", BOB, "x".into(), Value::Null, T0)
                .unwrap_err(),
            nf
        );
        assert_eq!(
            s.complete("prop_x", BOB, "x".into(), Value::Null, T0)
                .unwrap_err(),
            nf
        );
        assert_eq!(
            s.dispute("prop_x", BOB, "x".into(), json!("r"), T0)
                .unwrap_err(),
            nf
        );
        assert_eq!(nf.reason(), "PROPOSAL_NOT_FOUND");
        assert!(s.get("prop_x", T0).is_none());
    }

    #[test]
    fn a_decided_proposal_is_not_pending() {
        let (mut s, id) = accepted();
        let e = s
            .accept(&id, BOB, "x".into(), Value::Null, T0 + 2)
            .unwrap_err();
        assert_eq!(e, ProposalError::NotPending(Status::Accepted));
        assert_eq!(e.reason(), "PROPOSAL_NOT_PENDING");
        let e = s
            .reject(&id, BOB, "x".into(), Value::Null, T0 + 2)
            .unwrap_err();
        assert_eq!(e, ProposalError::NotPending(Status::Accepted));

        let (mut s, id) = store_with(None);
        s.reject(&id, BOB, "x".into(), Value::Null, T0).unwrap();
        let e = s.accept(&id, BOB, "x".into(), Value::Null, T0).unwrap_err();
        assert_eq!(e, ProposalError::NotPending(Status::Rejected));
    }

    #[test]
    fn expiry_is_lazy_and_refuses_accept_and_reject() {
        let (mut s, id) = store_with(Some(10.0));
        // At the instant of expiry it is still pending (0.3.0: `now > expires`).
        assert_eq!(s.get(&id, T0 + 10_000).unwrap().status(), Status::Pending);
        let e = s
            .accept(&id, BOB, "x".into(), Value::Null, T0 + 10_001)
            .unwrap_err();
        assert_eq!(e, ProposalError::Expired);
        assert_eq!(e.reason(), "PROPOSAL_EXPIRED");
        let e = s
            .reject(&id, BOB, "x".into(), Value::Null, T0 + 20_000)
            .unwrap_err();
        assert_eq!(e, ProposalError::Expired);
        let p = s.get(&id, T0 + 20_000).unwrap();
        assert_eq!(p.status(), Status::Expired);
        assert_eq!(p.updated_at, T0 + 10_001);
        // Expired is not accepted either.
        let e = s
            .complete(&id, ALICE, "x".into(), Value::Null, T0 + 20_000)
            .unwrap_err();
        assert_eq!(e, ProposalError::NotAccepted(Status::Expired));
    }

    #[test]
    fn a_negative_expiry_is_already_past() {
        let (mut s, id) = store_with(Some(-1.0));
        let e = s
            .accept(&id, BOB, "x".into(), Value::Null, T0 + 1)
            .unwrap_err();
        assert_eq!(e, ProposalError::Expired);
    }

    #[test]
    fn expiry_does_not_touch_an_accepted_proposal() {
        let (mut s, id) = accepted();
        let p = s.get(&id, T0 + 10_000_000).unwrap();
        assert_eq!(p.status(), Status::Accepted);
        s.complete(&id, ALICE, "c".into(), Value::Null, T0 + 10_000_000)
            .unwrap();
    }

    #[test]
    fn either_party_completes() {
        for who in [ALICE, BOB] {
            let (mut s, id) = accepted();
            let p = s
                .complete(&id, who, "sig-c".into(), json!("tx:1"), T0 + 9)
                .unwrap();
            assert_eq!(p.status(), Status::Completed);
            let m: Value = serde_json::from_str(&p.response_frame(T0 + 100).unwrap()).unwrap();
            let kind = m["type"].as_str().unwrap();
            assert_eq!(kind, "COMPLETE");
            assert_eq!(m["completed_by"], who);
            assert_eq!(m["completed_at"], T0 + 9);
            assert_eq!(m["proof"], "tx:1");
            assert_eq!(m["sig"], "sig-c");
            // The acceptance is kept.
            let State::Completed(a, _) = &p.state else {
                panic!()
            };
            assert_eq!(a.sig, "sig-a");
        }
    }

    #[test]
    fn either_party_disputes() {
        for who in [ALICE, BOB] {
            let (mut s, id) = accepted();
            let p = s
                .dispute(&id, who, "sig-d".into(), json!("late"), T0 + 9)
                .unwrap();
            assert_eq!(p.status(), Status::Disputed);
            let m: Value = serde_json::from_str(&p.response_frame(T0 + 100).unwrap()).unwrap();
            let kind = m["type"].as_str().unwrap();
            assert_eq!(kind, "DISPUTE");
            assert_eq!(m["disputed_by"], who);
            assert_eq!(m["disputed_at"], T0 + 9);
            assert_eq!(m["reason"], "late");
        }
    }

    #[test]
    fn only_parties_complete_or_dispute() {
        let (mut s, id) = accepted();
        let e = s
            .complete(&id, EVE, "x".into(), Value::Null, T0)
            .unwrap_err();
        assert_eq!(e, ProposalError::NotParty);
        assert_eq!(e.reason(), "NOT_PROPOSAL_PARTY");
        let e = s.dispute(&id, EVE, "x".into(), json!("r"), T0).unwrap_err();
        assert_eq!(e, ProposalError::NotParty);
        assert_eq!(s.get(&id, T0).unwrap().status(), Status::Accepted);
    }

    #[test]
    fn complete_and_dispute_need_an_accepted_proposal() {
        let (mut s, id) = store_with(None);
        let e = s
            .complete(&id, ALICE, "x".into(), Value::Null, T0)
            .unwrap_err();
        assert_eq!(e, ProposalError::NotAccepted(Status::Pending));
        assert_eq!(e.reason(), "PROPOSAL_NOT_ACCEPTED");
        let e = s.dispute(&id, BOB, "x".into(), json!("r"), T0).unwrap_err();
        assert_eq!(e, ProposalError::NotAccepted(Status::Pending));
        // Status is checked before the party, as in 0.3.0.
        let e = s
            .complete(&id, EVE, "x".into(), Value::Null, T0)
            .unwrap_err();
        assert_eq!(e, ProposalError::NotAccepted(Status::Pending));

        let (mut s, id) = accepted();
        s.complete(&id, BOB, "c".into(), Value::Null, T0 + 2)
            .unwrap();
        let e = s
            .complete(&id, ALICE, "x".into(), Value::Null, T0 + 3)
            .unwrap_err();
        assert_eq!(e, ProposalError::NotAccepted(Status::Completed));
        let e = s
            .dispute(&id, ALICE, "x".into(), json!("r"), T0 + 3)
            .unwrap_err();
        assert_eq!(e, ProposalError::NotAccepted(Status::Completed));

        let (mut s, id) = accepted();
        s.dispute(&id, BOB, "d".into(), json!("r"), T0 + 2).unwrap();
        let e = s
            .complete(&id, ALICE, "x".into(), Value::Null, T0 + 3)
            .unwrap_err();
        assert_eq!(e, ProposalError::NotAccepted(Status::Disputed));

        let (mut s, id) = store_with(None);
        s.reject(&id, BOB, "r".into(), Value::Null, T0).unwrap();
        let e = s
            .dispute(&id, ALICE, "x".into(), json!("r"), T0)
            .unwrap_err();
        assert_eq!(e, ProposalError::NotAccepted(Status::Rejected));
    }

    #[test]
    fn sweep_expires_then_forgets() {
        let mut s = legacy();
        let short = s.create(offer(Some(1.0)), T0).unwrap().id.clone();
        let open = s.create(offer(None), T0).unwrap().id.clone();
        let done = s.create(offer(None), T0).unwrap().id.clone();
        let taken = s.create(offer(Some(1.0)), T0).unwrap().id.clone();
        s.reject(&done, BOB, "r".into(), Value::Null, T0).unwrap();
        s.accept(&taken, BOB, "a".into(), Value::Null, T0).unwrap();

        assert_eq!(s.sweep(T0 + 2_000), 0);
        assert_eq!(s.get(&short, T0 + 2_000).unwrap().status(), Status::Expired);
        assert_eq!(s.len(), 4);

        // A day later the expired and the rejected ones are forgotten.
        let later = T0 + RETENTION_MS + 5_000;
        assert_eq!(s.sweep(later), 2);
        assert!(s.get(&short, later).is_none());
        assert!(s.get(&done, later).is_none());
        assert_eq!(s.get(&open, later).unwrap().status(), Status::Pending);
        assert_eq!(s.get(&taken, later).unwrap().status(), Status::Accepted);
    }

    #[test]
    fn sweep_if_due_waits_between_sweeps() {
        let mut s = legacy();
        let id = s.create(offer(Some(-1.0)), T0).unwrap().id.clone();
        s.reject(&id, BOB, "r".into(), Value::Null, T0).unwrap_err();
        let later = T0 + RETENTION_MS + 1;
        // Forgotten on the first due sweep, not on one just after it.
        assert_eq!(s.sweep_if_due(later), 1);
        s.create(offer(Some(-1.0)), later).unwrap();
        assert_eq!(s.sweep_if_due(later + RETENTION_MS / 2), 0);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_store_is_capped_per_agent_and_in_total() {
        let mut s = ProposalStore::new(StoreLimits {
            max_total: 10,
            max_pending_per_agent: 4,
            default_expiry_secs: 60,
        });
        for _ in 0..4 {
            s.create(offer(None), T0).unwrap();
        }
        let e = s.create(offer(None), T0).unwrap_err();
        assert_eq!(e.reason(), "TOO_MANY_PENDING_PROPOSALS");
        // Other proposers fill the store; then nothing is evictable.
        for i in 0..6 {
            let mut o = offer(None);
            o.from = format!("@other{}", i % 2);
            s.create(o, T0).unwrap();
        }
        let mut o = offer(None);
        o.from = "@late".into();
        assert_eq!(s.create(o.clone(), T0).unwrap_err(), ProposalError::TooMany);
        // Once they have expired (the default expiry), room is made.
        let later = T0 + 61_000;
        assert!(s.create(o, later).is_ok());
        assert!(s.len() <= 10);
    }

    #[test]
    fn a_default_expiry_applies_and_a_used_signature_is_refused() {
        let mut s = ProposalStore::default();
        let p = offer(None);
        let id = s.create(p.clone(), T0).unwrap().id.clone();
        assert_eq!(
            s.get(&id, T0).unwrap().expires,
            Some(T0 + DEFAULT_EXPIRY_SECS * 1000)
        );
        let e = s.create(p, T0 + 5).unwrap_err();
        assert_eq!(e, ProposalError::Replayed);
        assert_eq!(e.reason(), "PROPOSAL_REPLAYED");
    }

    #[test]
    fn or_null_follows_javascript_truthiness() {
        assert_eq!(or_null(None), Value::Null);
        assert_eq!(or_null(Some(&json!(0))), Value::Null);
        assert_eq!(or_null(Some(&json!(false))), Value::Null);
        assert_eq!(or_null(Some(&json!(""))), Value::Null);
        assert_eq!(or_null(Some(&json!(2))), json!(2));
        assert_eq!(or_null(Some(&json!("x"))), json!("x"));
    }
}
