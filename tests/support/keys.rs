//! Ed25519 keys for relay tests: an agent's canonical PEM and id, and the
//! frames a 0.3.0 keyed client signs (MSG, PROPOSAL, ACCEPT…, and the
//! VERIFY_IDENTITY answer to a CHALLENGE).

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{Relay, Ws};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An Ed25519 key with its canonical PEM and AgentChat id.
pub struct Key {
    pub signing: SigningKey,
    pub pem: String,
    pub id: String,
}

impl Key {
    pub fn new() -> Key {
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut seed)
            .unwrap();
        Key::from_signing(SigningKey::from_bytes(&seed))
    }

    pub fn from_signing(signing: SigningKey) -> Key {
        let pem = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let digest = Sha256::digest(pem.as_bytes());
        let id: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Key {
            signing,
            pem,
            id: format!("@{id}"),
        }
    }

    pub fn sign(&self, text: &str) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(self.signing.sign(text.as_bytes()).to_bytes())
    }

    /// A MSG as a 0.3.0 client with this key sends it: ts now, sig over
    /// JSON.stringify({to, content, ts}).
    pub fn msg(&self, to: &str, content: &str) -> Value {
        self.msg_at(to, content, now_ms())
    }

    pub fn msg_at(&self, to: &str, content: &str, ts: u64) -> Value {
        let text = format!(
            "{{\"to\":{},\"content\":{},\"ts\":{ts}}}",
            Value::from(to),
            Value::from(content)
        );
        json!({"type":"MSG","to":to,"content":content,"ts":ts,"sig":self.sign(&text)})
    }

    /// The VERIFY_IDENTITY answering `challenge`, signed by this key.
    pub fn answer(&self, challenge: &Value) -> Value {
        let ts = now_ms();
        let text = format!(
            "AGENTCHAT_AUTH|{}|{}|{ts}",
            challenge["nonce"].as_str().unwrap(),
            challenge["challenge_id"].as_str().unwrap()
        );
        json!({"type":"VERIFY_IDENTITY","challenge_id":challenge["challenge_id"],
               "signature":self.sign(&text),"timestamp":ts})
    }

    /// A PROPOSAL with no amount or currency, expiring in `expires` s.
    pub fn proposal(&self, to: &str, task: &str, expires: i64) -> Value {
        let text = format!("{to}|{task}||||{expires}");
        json!({"type":"PROPOSAL","to":to,"task":task,"expires":expires,"sig":self.sign(&text)})
    }

    pub fn act(&self, kind: &str, id: &str, field: &str, value: Option<&str>) -> Value {
        let text = format!("{kind}|{id}|{}", value.unwrap_or(""));
        let mut m = json!({"type": kind, "proposal_id": id, "sig": self.sign(&text)});
        m[field] = value.map_or(Value::Null, |v| json!(v));
        m
    }
}

/// A keyed agent welcomed in the default mode (IDENTIFY as 0.3.0 sends it).
pub fn keyed(relay: &Relay, name: &str, key: &Key) -> Ws {
    let mut ws = relay.client();
    ws.send(json!({"type":"IDENTIFY","name":name,"pubkey":key.pem}));
    let w = ws.expect("WELCOME");
    assert_eq!(w["agent_id"], key.id.as_str());
    ws
}
