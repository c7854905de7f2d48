//! Handling proposal messages on the relay: a validated [`ProposalRequest`]
//! (parsed by `protocol` / `proposal_wire`) has its signature checked against
//! the sender's pubkey, is applied to the [`ProposalStore`] (`proposals`),
//! and is answered with one frame for the actor and, where 0.3.0 sends it,
//! the other party.
//!
//! A function from request to response: no sockets, no locks. The hub looks
//! up the sender and who is online, calls [`handle`], and delivers the
//! [`Routed`] frame; [`Refused`] becomes an ERROR in its one place here.

use serde_json::{Map, Value};

use super::identity;
use super::proposal_wire::ProposalRequest;
use super::proposals::{NewProposal, ProposalError, ProposalStore};
use super::protocol::{ErrorCode, Refusal};
use super::signing;

/// Who sent the request: its wire id (`@k3f9x2ab`) and the pubkey PEM it
/// identified with, if any.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub id: &'a str,
    pub pubkey: Option<&'a str>,
}

/// Why a proposal message was turned down. `protocol` maps each to its
/// ERROR code (SIGNATURE_REQUIRED, INVALID_SIGNATURE, AGENT_NOT_FOUND,
/// INVALID_PROPOSAL with the reason as message).
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// The sender identified without a pubkey.
    SignatureRequired(&'static str),
    /// The signature does not verify over the text the message signs.
    InvalidSignature(String),
    /// A PROPOSAL to an agent that is not connected.
    AgentNotFound(String),
    Proposal(ProposalError),
}

impl Refused {
    /// The ERROR message. For INVALID_PROPOSAL it is the bare reason
    /// (`PROPOSAL_NOT_FOUND`, …), as 0.3.0 sends it.
    pub fn message(&self) -> String {
        match self {
            Refused::SignatureRequired(m) => (*m).to_string(),
            Refused::InvalidSignature(m) => m.clone(),
            Refused::AgentNotFound(a) => format!("Agent {a} not found"),
            Refused::Proposal(ProposalError::Replayed) => {
                "PROPOSAL_REPLAYED: this exact signed PROPOSAL was accepted before; \
                 a new proposal needs a new signature (change a signed field)"
                    .to_string()
            }
            Refused::Proposal(e) => e.reason().to_string(),
        }
    }
}

impl From<Refused> for Refusal {
    /// The one place a refused proposal message becomes an ERROR code.
    fn from(r: Refused) -> Self {
        let code = match r {
            Refused::SignatureRequired(_) => ErrorCode::SignatureRequired,
            Refused::InvalidSignature(_) => ErrorCode::InvalidSignature,
            Refused::AgentNotFound(_) => ErrorCode::AgentNotFound,
            Refused::Proposal(ProposalError::Replayed) => ErrorCode::ReplayDetected,
            Refused::Proposal(_) => ErrorCode::InvalidProposal,
        };
        Refusal::new(code, r.message())
    }
}

impl From<ProposalError> for Refused {
    fn from(e: ProposalError) -> Self {
        Refused::Proposal(e)
    }
}

/// What to deliver: `frame` goes to the actor (the echo) and, if `notify`
/// names a connected agent other than the actor, to that agent too.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub frame: String,
    pub notify: Option<String>,
    /// The proposal that changed (for the journal).
    pub id: String,
}

/// Checks and applies one proposal message. `raw` is the object as received
/// (the signed text is rebuilt from it); `online` says whether a wire id is
/// connected; `now` is Unix ms.
pub fn handle(
    store: &mut ProposalStore,
    actor: Actor<'_>,
    req: ProposalRequest,
    raw: &Map<String, Value>,
    online: impl Fn(&str) -> bool,
    now: u64,
) -> Result<Routed, Refused> {
    store.sweep_if_due(now);
    let Some(pem) = actor.pubkey else {
        return Err(Refused::SignatureRequired(match req {
            ProposalRequest::Propose { .. } => {
                "Proposals require persistent identity (IDENTIFY with a pubkey)"
            }
            ProposalRequest::Accept { .. } => "Accepting proposals requires persistent identity",
            ProposalRequest::Reject { .. } => "Rejecting proposals requires persistent identity",
            ProposalRequest::Complete { .. } => "Completing proposals requires persistent identity",
            ProposalRequest::Dispute { .. } => "Disputing proposals requires persistent identity",
        }));
    };
    check_signature(pem, &req, raw)?;
    let me = actor.id;
    match req {
        ProposalRequest::Propose {
            to,
            task,
            amount,
            currency,
            payment_code,
            terms,
            expires,
            sig,
        } => {
            if !online(&to) {
                return Err(Refused::AgentNotFound(to));
            }
            let p = store.create(
                NewProposal {
                    from: me.to_string(),
                    to: to.clone(),
                    task,
                    amount,
                    currency,
                    payment_code,
                    terms,
                    expires_in_secs: expires,
                    sig,
                },
                now,
            )?;
            Ok(Routed {
                frame: p.proposal_frame(now),
                notify: Some(to),
                id: p.id.clone(),
            })
        }
        ProposalRequest::Accept {
            proposal_id,
            payment_code,
            sig,
        } => {
            let p = store.accept(&proposal_id, me, sig, payment_code, now)?;
            Ok(routed(p, me, now))
        }
        ProposalRequest::Reject {
            proposal_id,
            reason,
            sig,
        } => {
            let p = store.reject(&proposal_id, me, sig, reason, now)?;
            Ok(routed(p, me, now))
        }
        ProposalRequest::Complete {
            proposal_id,
            proof,
            sig,
        } => {
            let p = store.complete(&proposal_id, me, sig, proof, now)?;
            Ok(routed(p, me, now))
        }
        ProposalRequest::Dispute {
            proposal_id,
            reason,
            sig,
        } => {
            let p = store.dispute(&proposal_id, me, sig, Value::String(reason), now)?;
            Ok(routed(p, me, now))
        }
    }
}

/// A transition's report goes to the actor and the other party.
fn routed(p: &super::proposals::Proposal, me: &str, now: u64) -> Routed {
    let other = if p.from == me { &p.to } else { &p.from };
    Routed {
        frame: p
            .response_frame(now)
            .expect("a proposal that just changed state has a response"),
        notify: (other != me).then(|| other.clone()),
        id: p.id.clone(),
    }
}

/// Beyond 0.3.0, which only relays signatures: the relay refuses a proposal
/// message whose signature does not verify against the sender's pubkey.
fn check_signature(
    pem: &str,
    req: &ProposalRequest,
    raw: &Map<String, Value>,
) -> Result<(), Refused> {
    let text = signing::signing_text(raw).unwrap_or_default();
    let verified = identity::parse_pubkey(pem)
        .map(|key| identity::verify(&key, &text, req.sig()))
        .unwrap_or(false);
    if verified {
        return Ok(());
    }
    Err(Refused::InvalidSignature(format!(
        "{} signature does not verify against your pubkey over the text {}",
        req.kind(),
        shown(&text)
    )))
}

/// The signed text as a JSON string, cut to a readable length.
fn shown(text: &str) -> String {
    const MAX: usize = 200;
    if text.chars().count() <= MAX {
        return Value::from(text).to_string();
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{}…", Value::from(cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::identity::Identity;
    use serde_json::json;

    impl Refused {
        fn code(&self) -> &'static str {
            Refusal::from(self.clone()).code.as_str()
        }
    }

    const T0: u64 = 1_764_000_000_000;

    struct Party {
        key: Identity,
        id: String,
    }

    impl Party {
        fn new(name: &str) -> Party {
            let key = Identity::generate(name).unwrap();
            let id = format!("@{}", key.agent_id());
            Party { key, id }
        }

        fn actor(&self) -> Actor<'_> {
            Actor {
                id: &self.id,
                pubkey: Some(&self.key.pubkey),
            }
        }

        /// A message as a 0.3.0 client sends it: fields, then `sig` over them.
        fn signed(&self, mut msg: Value) -> Map<String, Value> {
            let obj = msg.as_object_mut().unwrap();
            let text = signing::signing_text(obj).unwrap();
            obj.insert("sig".into(), json!(self.key.sign(&text)));
            obj.clone()
        }
    }

    fn send(
        store: &mut ProposalStore,
        who: &Party,
        raw: Map<String, Value>,
        now: u64,
    ) -> Result<Routed, Refused> {
        let req = ProposalRequest::parse(&raw).expect("valid request");
        handle(store, who.actor(), req, &raw, |_| true, now)
    }

    fn frame(r: &Routed) -> Value {
        serde_json::from_str(&r.frame).unwrap()
    }

    fn propose(store: &mut ProposalStore, a: &Party, b: &Party, expires: u64) -> String {
        // A distinct task each time: the same signed PROPOSAL twice is a replay.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let task = format!(
            "write docs {}",
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let raw = a.signed(json!({"type":"PROPOSAL","to":b.id,"task":task,"amount":2.5,"currency":"USDC","expires":expires}));
        let r = send(store, a, raw, T0).unwrap();
        assert_eq!(r.notify.as_deref(), Some(b.id.as_str()));
        frame(&r)["id"].as_str().unwrap().to_string()
    }

    #[test]
    fn full_lifecycle_routes_to_both_parties() {
        let (a, b) = (Party::new("a"), Party::new("b"));
        let mut store = ProposalStore::default();
        let raw = a.signed(json!({"type":"PROPOSAL","to":b.id,"task":"write docs","amount":2.5,"currency":"USDC","expires":300}));
        let r = send(&mut store, &a, raw, T0).unwrap();
        let f = frame(&r);
        assert_eq!(f["type"], "PROPOSAL");
        assert_eq!(f["from"], a.id);
        assert_eq!(f["to"], b.id);
        assert_eq!(f["status"], "pending");
        assert_eq!(f["expires"], T0 + 300_000);
        assert_eq!(r.notify.as_deref(), Some(b.id.as_str()));
        let id = f["id"].as_str().unwrap().to_string();

        let raw = b.signed(json!({"type":"ACCEPT","proposal_id":id,"payment_code":"bc1q"}));
        let r = send(&mut store, &b, raw, T0 + 1).unwrap();
        assert_eq!(frame(&r)["type"], "ACCEPT");
        assert_eq!(frame(&r)["status"], "accepted");
        assert_eq!(frame(&r)["payment_code"], "bc1q");
        assert_eq!(r.notify.as_deref(), Some(a.id.as_str()));

        let raw = a.signed(json!({"type":"COMPLETE","proposal_id":id,"proof":"https://x/1"}));
        let r = send(&mut store, &a, raw, T0 + 2).unwrap();
        assert_eq!(frame(&r)["status"], "completed");
        assert_eq!(frame(&r)["completed_by"], a.id);
        assert_eq!(r.notify.as_deref(), Some(b.id.as_str()));
    }

    #[test]
    fn reject_and_dispute_route_to_the_other_party() {
        let (a, b) = (Party::new("a"), Party::new("b"));
        let mut store = ProposalStore::default();
        let id = propose(&mut store, &a, &b, 300);
        let r = send(
            &mut store,
            &b,
            b.signed(json!({"type":"REJECT","proposal_id":id,"reason":"busy"})),
            T0,
        )
        .unwrap();
        assert_eq!(frame(&r)["status"], "rejected");
        assert_eq!(frame(&r)["reason"], "busy");
        assert_eq!(r.notify.as_deref(), Some(a.id.as_str()));

        let id = propose(&mut store, &a, &b, 300);
        send(
            &mut store,
            &b,
            b.signed(json!({"type":"ACCEPT","proposal_id":id})),
            T0,
        )
        .unwrap();
        let r = send(
            &mut store,
            &b,
            b.signed(json!({"type":"DISPUTE","proposal_id":id,"reason":"unpaid"})),
            T0,
        )
        .unwrap();
        assert_eq!(frame(&r)["status"], "disputed");
        assert_eq!(frame(&r)["disputed_by"], b.id);
        assert_eq!(r.notify.as_deref(), Some(a.id.as_str()));
    }

    #[test]
    fn forged_and_mismatched_signatures_are_refused() {
        let (a, b, eve) = (Party::new("a"), Party::new("b"), Party::new("e"));
        let mut store = ProposalStore::default();
        // Signed by Eve's key, sent from A's identity.
        let raw = eve.signed(json!({"type":"PROPOSAL","to":b.id,"task":"t"}));
        let e = send(&mut store, &a, raw, T0).unwrap_err();
        assert_eq!(e.code(), "INVALID_SIGNATURE");
        assert!(e.message().contains("\"@"), "{}", e.message());
        // Signed honestly, then a field changed in transit.
        let mut raw = a.signed(json!({"type":"PROPOSAL","to":b.id,"task":"t","amount":1}));
        raw.insert("amount".into(), json!(1000));
        assert_eq!(
            send(&mut store, &a, raw, T0).unwrap_err().code(),
            "INVALID_SIGNATURE"
        );
        // Garbage signature.
        let mut raw = a.signed(json!({"type":"PROPOSAL","to":b.id,"task":"t"}));
        raw.insert("sig".into(), json!("AAAA"));
        assert_eq!(
            send(&mut store, &a, raw, T0).unwrap_err().code(),
            "INVALID_SIGNATURE"
        );
        assert!(store.is_empty());

        let id = propose(&mut store, &a, &b, 300);
        let mut raw = b.signed(json!({"type":"ACCEPT","proposal_id":id,"payment_code":"mine"}));
        raw.insert("payment_code".into(), json!("attacker"));
        assert_eq!(
            send(&mut store, &b, raw, T0).unwrap_err().code(),
            "INVALID_SIGNATURE"
        );
        // The proposal is untouched.
        assert_eq!(store.get(&id, T0).unwrap().status().as_str(), "pending");
    }

    #[test]
    fn a_resent_proposal_is_a_replay() {
        let (a, b) = (Party::new("a"), Party::new("b"));
        let mut store = ProposalStore::default();
        let raw = a.signed(json!({"type":"PROPOSAL","to":b.id,"task":"t","terms":"x"}));
        send(&mut store, &a, raw.clone(), T0).unwrap();
        // The same signed fields, even with other (unsigned) terms.
        let mut again = raw;
        again.insert("terms".into(), json!("pay me double"));
        let e = send(&mut store, &a, again, T0 + 10).unwrap_err();
        assert_eq!(e.code(), "REPLAY_DETECTED");
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn no_pubkey_means_signature_required() {
        let b = Party::new("b");
        let mut store = ProposalStore::default();
        let raw = b.signed(json!({"type":"PROPOSAL","to":"@x","task":"t"}));
        let req = ProposalRequest::parse(&raw).unwrap();
        let anon = Actor {
            id: "@anon1234",
            pubkey: None,
        };
        let e = handle(&mut store, anon, req, &raw, |_| true, T0).unwrap_err();
        assert_eq!(e.code(), "SIGNATURE_REQUIRED");
    }

    #[test]
    fn offline_target_is_agent_not_found() {
        let (a, b) = (Party::new("a"), Party::new("b"));
        let mut store = ProposalStore::default();
        let raw = a.signed(json!({"type":"PROPOSAL","to":b.id,"task":"t"}));
        let req = ProposalRequest::parse(&raw).unwrap();
        let e = handle(&mut store, a.actor(), req, &raw, |_| false, T0).unwrap_err();
        assert_eq!(e.code(), "AGENT_NOT_FOUND");
        assert_eq!(e.message(), format!("Agent {} not found", b.id));
    }

    #[test]
    fn store_refusals_become_invalid_proposal_with_the_reason() {
        let (a, b, eve) = (Party::new("a"), Party::new("b"), Party::new("e"));
        let mut store = ProposalStore::default();
        let refused = |store: &mut ProposalStore, who: &Party, msg: Value, now: u64| {
            let e = send(store, who, who.signed(msg), now).unwrap_err();
            assert_eq!(e.code(), "INVALID_PROPOSAL");
            e.message()
        };
        let id = propose(&mut store, &a, &b, 300);
        assert_eq!(
            refused(
                &mut store,
                &b,
                json!({"type":"ACCEPT","proposal_id":"prop_nope_00000000"}),
                T0
            ),
            "PROPOSAL_NOT_FOUND"
        );
        assert_eq!(
            refused(
                &mut store,
                &a,
                json!({"type":"ACCEPT","proposal_id":id}),
                T0
            ),
            "NOT_PROPOSAL_RECIPIENT"
        );
        assert_eq!(
            refused(
                &mut store,
                &a,
                json!({"type":"COMPLETE","proposal_id":id}),
                T0
            ),
            "PROPOSAL_NOT_ACCEPTED"
        );
        send(
            &mut store,
            &b,
            b.signed(json!({"type":"ACCEPT","proposal_id":id})),
            T0,
        )
        .unwrap();
        assert_eq!(
            refused(
                &mut store,
                &b,
                json!({"type":"REJECT","proposal_id":id}),
                T0
            ),
            "PROPOSAL_NOT_PENDING"
        );
        assert_eq!(
            refused(
                &mut store,
                &eve,
                json!({"type":"DISPUTE","proposal_id":id,"reason":"x"}),
                T0
            ),
            "NOT_PROPOSAL_PARTY"
        );
        let short = propose(&mut store, &a, &b, 1);
        assert_eq!(
            refused(
                &mut store,
                &b,
                json!({"type":"ACCEPT","proposal_id":short}),
                T0 + 1_001
            ),
            "PROPOSAL_EXPIRED"
        );
    }

    /// Messages exactly as Node (standing in for a 0.3.0 client) signed them
    /// verify here: the relay accepts real 0.3.0 proposals.
    #[test]
    fn node_signed_messages_verify() {
        let node = Identity::from_json(
            include_str!("../../tests/vectors/node_identity.json"),
            std::path::Path::new("node"),
        )
        .unwrap();
        let v: Value =
            serde_json::from_str(include_str!("../../tests/vectors/node_vectors.json")).unwrap();
        let mut checked = 0;
        for s in v["signatures"].as_array().unwrap() {
            let raw = s["message"].as_object().unwrap();
            let Ok(req) = ProposalRequest::parse(raw) else {
                continue;
            };
            check_signature(&node.pubkey, &req, raw).unwrap();
            checked += 1;
        }
        assert!(checked >= 15, "{checked}");
    }
}
