//! AgentChat wire messages (see `shared/design/AGENTCHAT.md`): client frames
//! parsed at the edge into the closed enum [`ClientMsg`], server messages as
//! [`ServerMsg`], and the one place a [`Refusal`] becomes an ERROR frame.
//! No state and no I/O live here, so every rule is unit-testable.

use serde::Serialize;
use serde_json::{Map, Value};

use super::proposal_wire::ProposalRequest;

/// Message content limit, in JavaScript string length (UTF-16 code units),
/// because 0.3.0 checks `content.length > 4096`.
pub const MAX_CONTENT: usize = 4096;

/// The ERROR codes this relay sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    AuthRequired,
    ChannelNotFound,
    NotInvited,
    InvalidMsg,
    RateLimited,
    AgentNotFound,
    ChannelExists,
    SignatureRequired,
    /// A proposal action refused by the lifecycle; the message is the reason.
    InvalidProposal,
    /// Beyond 0.3.0: a proposal signature that does not verify against the
    /// sender's pubkey (issue 7).
    InvalidSignature,
    // Beyond 0.3.0, issue 12 (docs/relay-trust.md lists each):
    /// A CHALLENGE answer that does not verify, came late, or names another
    /// challenge (the code later AgentChat versions use).
    VerificationFailed,
    /// `--require-proof`: a keyed IDENTIFY whose CHALLENGE was not answered.
    ProofRequired,
    /// `--allow` / `--no-ephemeral` refused this identity (later AgentChat's code).
    NotAllowed,
    /// Another key already holds the id this key hashes to.
    IdentityCollision,
    /// A proven connection of the same key took over this id.
    SessionDisplaced,
    /// A signed message whose signature the relay accepted before.
    ReplayDetected,
    /// A signed MSG whose `ts` is too far from the relay's clock.
    TimestampOutOfWindow,
    /// A relay-wide or per-channel bound was reached (channels, invites).
    LimitReached,
    /// Issue 14: the relay could not write the change to its journal (a full
    /// or failing disk); nothing was changed.
    StoreFailed,
    /// Issue 14 §2: a cluster node cannot reach Redis (or its queue to it
    /// is full), so a request that needs the cluster's state was not
    /// carried out; nothing was changed.
    ClusterUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AuthRequired => "AUTH_REQUIRED",
            ErrorCode::ChannelNotFound => "CHANNEL_NOT_FOUND",
            ErrorCode::NotInvited => "NOT_INVITED",
            ErrorCode::InvalidMsg => "INVALID_MSG",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::AgentNotFound => "AGENT_NOT_FOUND",
            ErrorCode::ChannelExists => "CHANNEL_EXISTS",
            ErrorCode::SignatureRequired => "SIGNATURE_REQUIRED",
            ErrorCode::InvalidProposal => "INVALID_PROPOSAL",
            ErrorCode::InvalidSignature => "INVALID_SIGNATURE",
            ErrorCode::VerificationFailed => "VERIFICATION_FAILED",
            ErrorCode::ProofRequired => "PROOF_REQUIRED",
            ErrorCode::NotAllowed => "NOT_ALLOWED",
            ErrorCode::IdentityCollision => "IDENTITY_COLLISION",
            ErrorCode::SessionDisplaced => "SESSION_DISPLACED",
            ErrorCode::ReplayDetected => "REPLAY_DETECTED",
            ErrorCode::TimestampOutOfWindow => "TIMESTAMP_OUT_OF_WINDOW",
            ErrorCode::LimitReached => "LIMIT_REACHED",
            ErrorCode::StoreFailed => "STORE_FAILED",
            ErrorCode::ClusterUnavailable => "CLUSTER_UNAVAILABLE",
        }
    }
}

/// A request the relay turns down: becomes `{"type":"ERROR","code","message"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Refusal::new(ErrorCode::InvalidMsg, message)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// An agent's display name: 1–32 chars of `A–Z a–z 0–9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentName(String);

impl AgentName {
    pub fn parse(s: &str) -> Option<AgentName> {
        let ok = (1..=32).contains(&s.len()) && s.chars().all(is_name_char);
        ok.then(|| AgentName(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A channel name including its `#`: `#` and 1–31 chars of the name set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelName(String);

impl ChannelName {
    pub fn parse(s: &str) -> Option<ChannelName> {
        let rest = s.strip_prefix('#')?;
        let ok = (1..=31).contains(&rest.len()) && rest.chars().all(is_name_char);
        ok.then(|| ChannelName(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An agent id as written on the wire, with its `@` (`@k3f9x2ab`). The part
/// after `@` is only checked to be non-empty: unknown ids are AGENT_NOT_FOUND,
/// not malformed messages (0.3.0 only checks the prefix).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentId(String);

impl AgentId {
    pub fn parse(s: &str) -> Option<AgentId> {
        let rest = s.strip_prefix('@')?;
        (!rest.is_empty() && rest.len() <= 64).then(|| AgentId(s.to_string()))
    }
    /// The id a pubkey always maps to: `@` + first 8 hex chars of SHA-256
    /// over the PEM text exactly as sent.
    pub fn from_pubkey(pem: &str) -> AgentId {
        AgentId(format!("@{}", super::identity::agent_id(pem)))
    }
    /// An ephemeral id from 8 random bytes: 8 chars of `[a-z0-9]`.
    pub fn ephemeral(random: [u8; 8]) -> AgentId {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let s: String = random
            .iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
            .collect();
        AgentId(format!("@{s}"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a MSG goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Channel(ChannelName),
    Agent(AgentId),
}

impl Target {
    pub fn as_str(&self) -> &str {
        match self {
            Target::Channel(c) => c.as_str(),
            Target::Agent(a) => a.as_str(),
        }
    }
}

/// Everything a client may send, validated. Variants carry only checked
/// values; a message that does not fit one of them is a [`Refusal`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    /// `pubkey` is a canonical Ed25519 PEM (see `trust::canonical_pubkey`).
    /// `prove` (beyond 0.3.0, which never sends it): the client asks for a
    /// CHALLENGE even in the default mode, to prove its key at once.
    Identify {
        name: AgentName,
        pubkey: Option<String>,
        prove: bool,
    },
    /// The answer to a CHALLENGE (later AgentChat's wire): a signature over
    /// `AGENTCHAT_AUTH|<nonce>|<challenge_id>|<timestamp>`.
    VerifyIdentity {
        challenge_id: String,
        signature: String,
        timestamp: f64,
    },
    Join {
        channel: ChannelName,
    },
    Leave {
        channel: ChannelName,
    },
    Msg {
        to: Target,
        content: String,
        sig: Option<String>,
        /// The client's own timestamp, which its signature covers; relayed
        /// as `sig_ts` (the relayed `ts` is the relay's clock).
        ts: Option<u64>,
    },
    ListChannels,
    ListAgents {
        channel: ChannelName,
    },
    CreateChannel {
        channel: ChannelName,
        invite_only: bool,
    },
    Invite {
        channel: ChannelName,
        agent: AgentId,
    },
    Ping,
    /// PROPOSAL, ACCEPT, REJECT, COMPLETE, DISPUTE (issue 7), validated
    /// into a [`ProposalRequest`]. The object as received is kept too: the
    /// signature covers a text rebuilt from the fields exactly as sent.
    Proposal {
        req: ProposalRequest,
        raw: Map<String, Value>,
    },
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn channel_field(obj: &Map<String, Value>) -> Result<ChannelName, Refusal> {
    str_field(obj, "channel")
        .and_then(ChannelName::parse)
        .ok_or_else(|| Refusal::invalid("Invalid channel name"))
}

/// The IDENTIFY `pubkey`: an Ed25519 SPKI key (its point is checked by every
/// signature verification), in the one standard PEM layout (issue 12: a
/// whitespace variant would be a second id for the same key).
fn pubkey_field(v: Option<&Value>) -> Result<Option<String>, Refusal> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(p)) => match super::trust::canonical_pubkey(p) {
            Ok(_) => Ok(Some(p.clone())),
            Err(why) if super::identity::parse_pubkey(p).is_ok() => {
                Err(Refusal::invalid(format!("Invalid public key: {why}")))
            }
            Err(_) => Err(Refusal::invalid(
                "Invalid public key format (must be Ed25519 PEM)",
            )),
        },
        Some(_) => Err(Refusal::invalid(
            "Invalid public key format (must be Ed25519 PEM)",
        )),
    }
}

impl ClientMsg {
    /// Parses one text frame. Every failure is INVALID_MSG with a message a
    /// human (or an AI agent) can act on, worded as 0.3.0 words it.
    pub fn parse(text: &str) -> Result<ClientMsg, Refusal> {
        let value: Value =
            serde_json::from_str(text).map_err(|_| Refusal::invalid("Invalid JSON"))?;
        let Value::Object(obj) = value else {
            return Err(Refusal::invalid("Message must be a JSON object"));
        };
        let Some(kind) = obj.get("type") else {
            return Err(Refusal::invalid("Missing message type"));
        };
        let Some(kind) = kind.as_str() else {
            return Err(Refusal::invalid("Message type must be a string"));
        };
        match kind {
            "IDENTIFY" => {
                let name = str_field(&obj, "name")
                    .and_then(AgentName::parse)
                    .ok_or_else(|| Refusal::invalid("Invalid agent name"))?;
                let pubkey = pubkey_field(obj.get("pubkey"))?;
                let prove = obj.get("prove") == Some(&Value::Bool(true));
                Ok(ClientMsg::Identify {
                    name,
                    pubkey,
                    prove,
                })
            }
            "VERIFY_IDENTITY" => {
                // Later AgentChat's checks, in its order and words.
                let challenge_id = str_field(&obj, "challenge_id")
                    .filter(|s| !s.is_empty() && s.len() <= 128)
                    .ok_or_else(|| Refusal::invalid("Missing or invalid challenge_id"))?;
                let signature = str_field(&obj, "signature")
                    .filter(|s| !s.is_empty() && s.len() <= 1024)
                    .ok_or_else(|| Refusal::invalid("Missing or invalid signature"))?;
                let timestamp = obj
                    .get("timestamp")
                    .and_then(Value::as_f64)
                    .filter(|t| *t != 0.0 && t.is_finite())
                    .ok_or_else(|| Refusal::invalid("Missing or invalid timestamp"))?;
                Ok(ClientMsg::VerifyIdentity {
                    challenge_id: challenge_id.to_string(),
                    signature: signature.to_string(),
                    timestamp,
                })
            }
            "JOIN" => Ok(ClientMsg::Join {
                channel: channel_field(&obj)?,
            }),
            "LEAVE" => Ok(ClientMsg::Leave {
                channel: channel_field(&obj)?,
            }),
            "LIST_AGENTS" => Ok(ClientMsg::ListAgents {
                channel: channel_field(&obj)?,
            }),
            "LIST_CHANNELS" => Ok(ClientMsg::ListChannels),
            "PING" => Ok(ClientMsg::Ping),
            "MSG" => parse_msg(obj),
            "CREATE_CHANNEL" => {
                let channel = channel_field(&obj)?;
                let invite_only = match obj.get("invite_only") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => return Err(Refusal::invalid("invite_only must be a boolean")),
                };
                Ok(ClientMsg::CreateChannel {
                    channel,
                    invite_only,
                })
            }
            "INVITE" => {
                let channel = channel_field(&obj)?;
                let agent = str_field(&obj, "agent")
                    .and_then(AgentId::parse)
                    .ok_or_else(|| Refusal::invalid("Invalid agent target"))?;
                Ok(ClientMsg::Invite { channel, agent })
            }
            "PROPOSAL" | "ACCEPT" | "REJECT" | "COMPLETE" | "DISPUTE" => {
                let req = ProposalRequest::parse(&obj).map_err(Refusal::invalid)?;
                Ok(ClientMsg::Proposal { req, raw: obj })
            }
            other => {
                let shown: String = other.chars().take(40).collect();
                Err(Refusal::invalid(format!("Unknown message type: {shown}")))
            }
        }
    }
}

fn parse_msg(mut obj: Map<String, Value>) -> Result<ClientMsg, Refusal> {
    let to = match str_field(&obj, "to") {
        None | Some("") => return Err(Refusal::invalid("Missing target")),
        Some(t) if t.starts_with('#') => Target::Channel(
            ChannelName::parse(t).ok_or_else(|| Refusal::invalid("Invalid channel name"))?,
        ),
        Some(t) if t.starts_with('@') => Target::Agent(
            AgentId::parse(t).ok_or_else(|| Refusal::invalid("Invalid agent target"))?,
        ),
        Some(_) => return Err(Refusal::invalid("Invalid target (must start with # or @)")),
    };
    let content = match obj.remove("content") {
        Some(Value::String(s)) => s,
        _ => return Err(Refusal::invalid("Missing or invalid content")),
    };
    if content.encode_utf16().count() > MAX_CONTENT {
        return Err(Refusal::invalid("Content too long (max 4096 chars)"));
    }
    let sig = match obj.remove("sig") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 1024 => Some(s),
        Some(_) => return Err(Refusal::invalid("Invalid signature format")),
    };
    let ts = obj.get("ts").and_then(Value::as_u64);
    Ok(ClientMsg::Msg {
        to,
        content,
        sig,
        ts,
    })
}

/// One channel in a CHANNELS list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChannelInfo {
    pub name: String,
    pub agents: usize,
}

/// Everything the relay sends. Serialised as `{"type":…, fields…, "ts":…}`
/// by [`ServerMsg::encode`]; borrowed fields so a broadcast is built once.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerMsg<'a> {
    Welcome {
        agent_id: &'a str,
        server: &'a str,
        /// `true` once the connection proved its key (later AgentChat's
        /// field); left out otherwise, as 0.3.0 sends WELCOME.
        #[serde(skip_serializing_if = "Option::is_none")]
        verified: Option<bool>,
    },
    /// `--require-proof` (or IDENTIFY with `prove`): sign
    /// `AGENTCHAT_AUTH|<nonce>|<challenge_id>|<timestamp>` and answer with
    /// VERIFY_IDENTITY before `expires_at` (Unix ms).
    Challenge {
        challenge_id: &'a str,
        nonce: &'a str,
        expires_at: u64,
    },
    Joined {
        channel: &'a str,
        agents: Vec<&'a str>,
    },
    Left {
        channel: &'a str,
    },
    AgentJoined {
        channel: &'a str,
        agent: &'a str,
    },
    AgentLeft {
        channel: &'a str,
        agent: &'a str,
    },
    Msg {
        from: &'a str,
        to: &'a str,
        content: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        sig: Option<&'a str>,
        /// The client's `ts` that `sig` covers (`ts` itself is the relay's
        /// clock, as in 0.3.0): verify with `{to, content, ts: sig_ts}`.
        #[serde(skip_serializing_if = "Option::is_none")]
        sig_ts: Option<u64>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        replay: bool,
    },
    Channels {
        list: Vec<ChannelInfo>,
    },
    Agents {
        channel: &'a str,
        list: Vec<&'a str>,
    },
    Pong {},
    Error {
        code: &'static str,
        message: &'a str,
    },
    /// A new proposal (0.3.0's layout; `expires` absolute ms or null).
    Proposal {
        id: &'a str,
        from: &'a str,
        to: &'a str,
        task: &'a str,
        amount: &'a Value,
        currency: &'a Value,
        payment_code: &'a Value,
        terms: &'a Value,
        expires: Option<u64>,
        status: &'static str,
        created_at: u64,
        sig: &'a str,
    },
    /// Proposal transitions (0.3.0's `formatProposalResponse`).
    Accept {
        proposal_id: &'a str,
        status: &'static str,
        updated_at: u64,
        from: &'a str,
        to: &'a str,
        payment_code: &'a Value,
        sig: &'a str,
    },
    Reject {
        proposal_id: &'a str,
        status: &'static str,
        updated_at: u64,
        from: &'a str,
        to: &'a str,
        reason: &'a Value,
        sig: &'a str,
    },
    Complete {
        proposal_id: &'a str,
        status: &'static str,
        updated_at: u64,
        from: &'a str,
        to: &'a str,
        completed_by: &'a str,
        completed_at: u64,
        proof: &'a Value,
        sig: &'a str,
    },
    Dispute {
        proposal_id: &'a str,
        status: &'static str,
        updated_at: u64,
        from: &'a str,
        to: &'a str,
        disputed_by: &'a str,
        disputed_at: u64,
        reason: &'a Value,
        sig: &'a str,
    },
}

#[derive(Serialize)]
struct Stamped<'a, 'b> {
    #[serde(flatten)]
    msg: &'b ServerMsg<'a>,
    ts: u64,
}

impl ServerMsg<'_> {
    /// The frame text, with `ts` (every server message carries one).
    pub fn encode(&self, ts: u64) -> String {
        // Serialising borrowed strings, integers and bools cannot fail.
        serde_json::to_string(&Stamped { msg: self, ts }).expect("server message serialises")
    }
}

impl<'a> From<&'a Refusal> for ServerMsg<'a> {
    /// The one place a refusal becomes an ERROR frame.
    fn from(r: &'a Refusal) -> Self {
        ServerMsg::Error {
            code: r.code.as_str(),
            message: &r.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        match ClientMsg::parse(text) {
            Err(r) => {
                assert_eq!(r.code, ErrorCode::InvalidMsg, "{text}");
                r.message
            }
            Ok(m) => panic!("{text} parsed as {m:?}"),
        }
    }

    const PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

    #[test]
    fn names_follow_the_rules() {
        assert!(AgentName::parse("a").is_some());
        assert!(AgentName::parse(&"a".repeat(32)).is_some());
        assert!(AgentName::parse(&"a".repeat(33)).is_none());
        assert!(AgentName::parse("").is_none());
        assert!(AgentName::parse("bad name").is_none());
        assert!(AgentName::parse("é").is_none());
        assert!(ChannelName::parse("#general").is_some());
        assert!(ChannelName::parse(&format!("#{}", "c".repeat(31))).is_some());
        assert!(ChannelName::parse(&format!("#{}", "c".repeat(32))).is_none());
        assert!(ChannelName::parse("#").is_none());
        assert!(ChannelName::parse("general").is_none());
        assert!(ChannelName::parse("#a b").is_none());
    }

    #[test]
    fn parses_every_client_type() {
        assert_eq!(
            ClientMsg::parse(r#"{"type":"IDENTIFY","name":"bot"}"#),
            Ok(ClientMsg::Identify {
                name: AgentName("bot".into()),
                pubkey: None,
                prove: false
            })
        );
        assert_eq!(
            ClientMsg::parse(r#"{"type":"MSG","to":"@abc","content":"hi","sig":"s","ts":5}"#),
            Ok(ClientMsg::Msg {
                to: Target::Agent(AgentId("@abc".into())),
                content: "hi".into(),
                sig: Some("s".into()),
                ts: Some(5)
            })
        );
        assert_eq!(
            ClientMsg::parse(r##"{"type":"CREATE_CHANNEL","channel":"#x","invite_only":true}"##),
            Ok(ClientMsg::CreateChannel {
                channel: ChannelName("#x".into()),
                invite_only: true
            })
        );
        for t in ["LIST_CHANNELS", "PING"] {
            assert!(ClientMsg::parse(&format!(r#"{{"type":"{t}"}}"#)).is_ok());
        }
        for t in ["JOIN", "LEAVE", "LIST_AGENTS"] {
            assert!(ClientMsg::parse(&format!(r##"{{"type":"{t}","channel":"#a"}}"##)).is_ok());
        }
        assert!(ClientMsg::parse(r##"{"type":"INVITE","channel":"#a","agent":"@x"}"##).is_ok());
        assert!(matches!(
            ClientMsg::parse(r#"{"type":"ACCEPT","proposal_id":"p","sig":"s"}"#),
            Ok(ClientMsg::Proposal {
                req: ProposalRequest::Accept { .. },
                ..
            })
        ));
        assert_eq!(
            refused(r#"{"type":"ACCEPT","proposal_id":"p"}"#),
            "Accept must be signed"
        );
    }

    #[test]
    fn rejects_bad_input_with_invalid_msg() {
        assert_eq!(refused("{nope"), "Invalid JSON");
        assert_eq!(refused("[1]"), "Message must be a JSON object");
        assert_eq!(refused("{}"), "Missing message type");
        assert_eq!(refused(r#"{"type":"FLY"}"#), "Unknown message type: FLY");
        assert_eq!(
            refused(r#"{"type":"IDENTIFY","name":"a b"}"#),
            "Invalid agent name"
        );
        assert_eq!(
            refused(r#"{"type":"JOIN","channel":"general"}"#),
            "Invalid channel name"
        );
        assert_eq!(
            refused(r#"{"type":"MSG","to":"x","content":"a"}"#),
            "Invalid target (must start with # or @)"
        );
        assert_eq!(
            refused(r##"{"type":"MSG","to":"#a"}"##),
            "Missing or invalid content"
        );
        let long = "é".repeat(MAX_CONTENT + 1);
        assert_eq!(
            refused(&format!(
                r##"{{"type":"MSG","to":"#a","content":"{long}"}}"##
            )),
            "Content too long (max 4096 chars)"
        );
        let ok = "é".repeat(MAX_CONTENT);
        assert!(
            ClientMsg::parse(&format!(r##"{{"type":"MSG","to":"#a","content":"{ok}"}}"##)).is_ok()
        );
        assert_eq!(
            refused(r#"{"type":"IDENTIFY","name":"a","pubkey":"nope"}"#),
            "Invalid public key format (must be Ed25519 PEM)"
        );
        assert_eq!(
            refused(r##"{"type":"INVITE","channel":"#a","agent":"x"}"##),
            "Invalid agent target"
        );
    }

    #[test]
    fn verify_identity_and_pem_layout_rules() {
        let ok = r#"{"type":"VERIFY_IDENTITY","challenge_id":"c","signature":"s","timestamp":5}"#;
        assert!(matches!(
            ClientMsg::parse(ok),
            Ok(ClientMsg::VerifyIdentity { .. })
        ));
        assert_eq!(
            refused(r#"{"type":"VERIFY_IDENTITY","signature":"s","timestamp":5}"#),
            "Missing or invalid challenge_id"
        );
        assert_eq!(
            refused(r#"{"type":"VERIFY_IDENTITY","challenge_id":"c","timestamp":5}"#),
            "Missing or invalid signature"
        );
        assert_eq!(
            refused(
                r#"{"type":"VERIFY_IDENTITY","challenge_id":"c","signature":"s","timestamp":"5"}"#
            ),
            "Missing or invalid timestamp"
        );
        let spaced = serde_json::json!({"type":"IDENTIFY","name":"k","pubkey":format!("{PEM}\n")});
        let why = refused(&spaced.to_string());
        assert!(why.contains("standard PEM layout"), "{why}");
        let prove = serde_json::json!({"type":"IDENTIFY","name":"k","pubkey":PEM,"prove":true});
        assert!(matches!(
            ClientMsg::parse(&prove.to_string()),
            Ok(ClientMsg::Identify { prove: true, .. })
        ));
    }

    #[test]
    fn pubkey_ids_are_stable_sha256_prefixes() {
        let msg = serde_json::json!({"type":"IDENTIFY","name":"k","pubkey":PEM}).to_string();
        assert!(matches!(
            ClientMsg::parse(&msg),
            Ok(ClientMsg::Identify {
                pubkey: Some(_),
                ..
            })
        ));
        let id = AgentId::from_pubkey(PEM);
        assert_eq!(id.as_str().len(), 9);
        assert_eq!(id, AgentId::from_pubkey(PEM));
        let eph = AgentId::ephemeral([0, 1, 25, 26, 35, 36, 255, 7]);
        assert_eq!(eph.as_str(), "@abz09adh");
    }

    #[test]
    fn encodes_exact_wire_text() {
        assert_eq!(
            ServerMsg::Msg {
                from: "@a",
                to: "#g",
                content: "hi",
                sig: None,
                sig_ts: None,
                replay: false
            }
            .encode(7),
            r##"{"type":"MSG","from":"@a","to":"#g","content":"hi","ts":7}"##
        );
        assert_eq!(
            ServerMsg::Msg {
                from: "@a",
                to: "#g",
                content: "hi",
                sig: Some("s"),
                sig_ts: Some(5),
                replay: true
            }
            .encode(7),
            r##"{"type":"MSG","from":"@a","to":"#g","content":"hi","sig":"s","sig_ts":5,"replay":true,"ts":7}"##
        );
        assert_eq!(ServerMsg::Pong {}.encode(1), r#"{"type":"PONG","ts":1}"#);
        let w = ServerMsg::Welcome {
            agent_id: "@a",
            server: "s",
            verified: None,
        };
        assert_eq!(
            w.encode(3),
            r#"{"type":"WELCOME","agent_id":"@a","server":"s","ts":3}"#
        );
        let c = ServerMsg::Challenge {
            challenge_id: "chal_x_1",
            nonce: "n",
            expires_at: 9,
        };
        assert_eq!(
            c.encode(4),
            r#"{"type":"CHALLENGE","challenge_id":"chal_x_1","nonce":"n","expires_at":9,"ts":4}"#
        );
        let r = Refusal::new(ErrorCode::RateLimited, "slow down");
        assert_eq!(
            ServerMsg::from(&r).encode(2),
            r#"{"type":"ERROR","code":"RATE_LIMITED","message":"slow down","ts":2}"#
        );
    }
}
