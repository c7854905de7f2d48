//! What the relay remembers so that only a key speaks for its id (issue 12):
//! which key first held each id ([`KeyBook`]), which signatures it has
//! already accepted ([`SeenSigs`], so a captured frame cannot be replayed),
//! the optional allowlist of keys (`--allow FILE`, [`Allowlist`]), and the
//! proof-of-possession challenge (`--require-proof`, [`Challenge`]).
//!
//! Pure data structures: every call takes the current time, nothing here
//! locks, blocks or does I/O except [`Allowlist::load`], which reads its
//! file. The hub owns one of each under its lock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use serde_json::Value;

use super::identity::{self, PublicKey};
use super::signing::js_number;

/// An Ed25519 public key as its 32 raw bytes: what an id is bound to.
pub type KeyBytes = [u8; 32];

/// The one PEM layout a key is accepted in: what Node's
/// `createPublicKey().export({type:'spki',format:'pem'})` writes, and so what
/// every 0.3.0 client sends: the armour lines, the base64 in one 64-column
/// line, LF line ends, a final newline. `Err` says what is wrong.
///
/// Why strict: the agent id hashes the PEM text, so any accepted variation
/// of the text (whitespace, line breaks) is a fresh id for the same key, and
/// a cheap way to grind an id that collides with someone else's.
pub fn canonical_pubkey(pem: &str) -> Result<PublicKey, String> {
    let key = identity::parse_pubkey(pem)?;
    if key.to_pem() != pem {
        return Err("public key must be in the standard PEM layout \
             (\"-----BEGIN PUBLIC KEY-----\\n<base64>\\n-----END PUBLIC KEY-----\\n\", \
             as Node's crypto exports it): no extra whitespace, LF line ends"
            .into());
    }
    Ok(key)
}

/// Which key first held each keyed id. Bounded: past `max` bindings, the
/// oldest binding whose agent is not connected is forgotten (the relay has
/// no durable state yet, so bindings also end with the process).
#[derive(Debug)]
pub struct KeyBook {
    keys: HashMap<String, KeyBytes>,
    order: VecDeque<String>,
    max: usize,
}

/// What [`KeyBook::check`] found for an id and key.
#[derive(Debug, PartialEq, Eq)]
pub enum Binding {
    /// Never seen: bind it on WELCOME.
    New,
    /// Bound to this very key.
    Same,
    /// Bound to another key whose id collides.
    Collides,
}

impl KeyBook {
    pub fn new(max: usize) -> KeyBook {
        KeyBook {
            keys: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    pub fn check(&self, id: &str, key: &KeyBytes) -> Binding {
        match self.keys.get(id) {
            None => Binding::New,
            Some(k) if k == key => Binding::Same,
            Some(_) => Binding::Collides,
        }
    }

    /// Binds `id` to `key` (after [`Binding::New`]). `connected` says
    /// whether an id is in use now; such bindings are never evicted.
    pub fn bind(&mut self, id: &str, key: KeyBytes, connected: impl Fn(&str) -> bool) {
        if self.keys.contains_key(id) {
            return;
        }
        if self.keys.len() >= self.max {
            // Forget the oldest idle binding; rotate connected ones to the back.
            for _ in 0..self.order.len() {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                if connected(&old) {
                    self.order.push_back(old);
                } else {
                    self.keys.remove(&old);
                    break;
                }
            }
        }
        self.keys.insert(id.to_string(), key);
        self.order.push_back(id.to_string());
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Every binding, oldest first (for the relay's journal snapshot).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &KeyBytes)> {
        self.order
            .iter()
            .filter_map(|id| Some((id.as_str(), self.keys.get(id)?)))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Signatures accepted within the replay window, remembered until the
/// window around their `ts` has passed (after that the `ts` check refuses
/// them anyway). Bounded by `max`; when full of live entries, new signed
/// messages are refused rather than a live entry forgotten.
#[derive(Debug)]
pub struct SeenSigs {
    seen: HashSet<[u8; 16]>,
    /// (forget at, key), in insertion order; `forget at` is not monotonic
    /// (clients' clocks differ), so expiry pops while the front is due.
    order: VecDeque<(u64, [u8; 16])>,
    max: usize,
}

/// Why [`SeenSigs::admit`] refused a signature.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// Already accepted within the window.
    Seen,
    /// The memory for the window is full.
    Full,
}

impl SeenSigs {
    pub fn new(max: usize) -> SeenSigs {
        SeenSigs {
            seen: HashSet::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// The first 16 bytes of the decoded signature: Ed25519's `R`, which a
    /// forger cannot choose to match someone else's future signature.
    fn key(sig_b64: &str) -> [u8; 16] {
        let bytes = STANDARD
            .decode(sig_b64)
            .or_else(|_| STANDARD_NO_PAD.decode(sig_b64))
            .unwrap_or_else(|_| sig_b64.as_bytes().to_vec());
        let mut k = [0u8; 16];
        for (d, s) in k.iter_mut().zip(bytes.iter()) {
            *d = *s;
        }
        k
    }

    /// Records `sig` as used until `forget_at` (Unix ms), or says why not.
    pub fn admit(&mut self, sig: &str, forget_at: u64, now: u64) -> Result<(), Replay> {
        self.expire(now);
        let k = SeenSigs::key(sig);
        if self.seen.contains(&k) {
            return Err(Replay::Seen);
        }
        if self.seen.len() >= self.max {
            return Err(Replay::Full);
        }
        self.seen.insert(k);
        self.order.push_back((forget_at, k));
        Ok(())
    }

    /// Whether `sig` was accepted (and not yet forgotten).
    pub fn contains(&self, sig: &str) -> bool {
        self.seen.contains(&SeenSigs::key(sig))
    }

    fn expire(&mut self, now: u64) {
        // Entries are in arrival order and their times roughly follow it.
        while let Some(&(at, k)) = self.order.front() {
            if at > now {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&k);
        }
        // Full: a far-future entry at the front may hide due ones behind it.
        if self.seen.len() >= self.max {
            let seen = &mut self.seen;
            self.order.retain(|(at, k)| {
                let keep = *at > now;
                if !keep {
                    seen.remove(k);
                }
                keep
            });
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The keys that may IDENTIFY with a pubkey (`--allow FILE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    keys: HashSet<KeyBytes>,
}

impl Allowlist {
    pub fn allows(&self, key: &KeyBytes) -> bool {
        self.keys.contains(key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Reads an allowlist file; the error names the file and the line.
    pub fn load(path: &Path) -> Result<Allowlist, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the allowlist: {e}", path.display()))?;
        Allowlist::parse(&text).map_err(|(line, why)| format!("{}:{line}: {why}", path.display()))
    }

    /// The file is a sequence of entries, separated by whitespace:
    /// PEM blocks (`-----BEGIN PUBLIC KEY-----` … `-----END PUBLIC KEY-----`),
    /// JSON objects with a `pubkey` (what `workbench identity --export` and
    /// 0.3.0's `agentchat identity --export` print), or JSON arrays of them.
    /// Lines starting with `#` are comments. `Err((line, why))`.
    pub fn parse(text: &str) -> Result<Allowlist, (usize, String)> {
        const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
        const END: &str = "-----END PUBLIC KEY-----";
        let mut keys = HashSet::new();
        let mut pos = 0;
        let line_of = |at: usize| text[..at].matches('\n').count() + 1;
        while pos < text.len() {
            let rest = &text[pos..];
            let trimmed = rest.trim_start();
            if trimmed.is_empty() {
                break;
            }
            let at = pos + (rest.len() - trimmed.len());
            let line = line_of(at);
            if trimmed.starts_with('#') {
                pos = at + trimmed.find('\n').map_or(trimmed.len(), |n| n + 1);
            } else if trimmed.starts_with(BEGIN) {
                let end = trimmed
                    .find(END)
                    .ok_or((line, format!("a PEM block without {END}")))?;
                let pem = format!("{}\n", &trimmed[..end + END.len()]);
                let key = canonical_pubkey(&pem).map_err(|e| (line, e))?;
                keys.insert(key.to_bytes());
                pos = at + end + END.len();
            } else if trimmed.starts_with('{') || trimmed.starts_with('[') {
                let mut stream = serde_json::Deserializer::from_str(trimmed).into_iter::<Value>();
                let value = match stream.next() {
                    Some(Ok(v)) => v,
                    Some(Err(e)) => {
                        return Err((line_of(at) + e.line().saturating_sub(1), e.to_string()))
                    }
                    None => break,
                };
                let items = match value {
                    Value::Array(items) => items,
                    other => vec![other],
                };
                for item in items {
                    let pem = item
                        .get("pubkey")
                        .and_then(Value::as_str)
                        .ok_or((line, "a JSON entry without a \"pubkey\" string".to_string()))?;
                    let key = canonical_pubkey(pem).map_err(|e| (line, e))?;
                    keys.insert(key.to_bytes());
                }
                pos = at + stream.byte_offset();
            } else {
                let shown: String = trimmed
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(40)
                    .collect();
                return Err((
                    line,
                    format!(
                        "expected a PEM public key or an exported identity (JSON), found {shown:?}"
                    ),
                ));
            }
        }
        Ok(Allowlist { keys })
    }
}

/// A pending proof-of-possession challenge (`CHALLENGE` → `VERIFY_IDENTITY`).
#[derive(Debug, Clone)]
pub struct Challenge {
    /// `chal_<ms base 36>_<8 hex>`, as later AgentChat versions write it.
    pub id: String,
    /// 32 hex digits from the kernel's randomness.
    pub nonce: String,
    /// Unix ms after which an answer is refused.
    pub expires_at: u64,
}

impl Challenge {
    /// A fresh challenge, or `None` without a source of randomness (the
    /// nonce must be unpredictable, so there is no fallback).
    pub fn new(now: u64, ttl_ms: u64) -> Option<Challenge> {
        let nonce = crate::util::random_hex(16).ok()?;
        let tail = crate::util::random_hex(4).ok()?;
        Some(Challenge {
            id: format!("chal_{}_{tail}", super::proposals::base36(now)),
            nonce,
            expires_at: now.saturating_add(ttl_ms),
        })
    }

    /// The text the client signs: `AGENTCHAT_AUTH|<nonce>|<challenge_id>|<timestamp>`,
    /// the timestamp as JavaScript prints the number it sent.
    pub fn signing_text(&self, timestamp: f64) -> String {
        format!(
            "AGENTCHAT_AUTH|{}|{}|{}",
            self.nonce,
            self.id,
            js_number(timestamp)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::identity::Identity;

    #[test]
    fn only_the_canonical_layout_is_accepted() {
        let id = Identity::generate("t").unwrap();
        assert!(canonical_pubkey(&id.pubkey).is_ok());
        let pem = id.pubkey.clone();
        for variant in [
            pem.trim_end().to_string(),
            format!("{pem}\n"),
            format!(" {pem}"),
            pem.replace('\n', "\r\n"),
            pem.replacen('\n', "\n\n", 1),
            pem.replacen("\n-----END", " \n-----END", 1),
        ] {
            let e = canonical_pubkey(&variant).unwrap_err();
            assert!(e.contains("standard PEM layout"), "{variant:?}: {e}");
        }
        assert!(canonical_pubkey("nope").is_err());
        let key = identity::parse_pubkey(&pem).unwrap();
        assert_eq!(key.to_pem(), pem);
    }

    #[test]
    fn the_key_book_binds_once_and_refuses_collisions() {
        let mut b = KeyBook::new(2);
        assert_eq!(b.check("@a", &[1; 32]), Binding::New);
        b.bind("@a", [1; 32], |_| false);
        assert_eq!(b.check("@a", &[1; 32]), Binding::Same);
        assert_eq!(b.check("@a", &[2; 32]), Binding::Collides);
        b.bind("@b", [2; 32], |_| true);
        // Full: the idle oldest (@a) goes, the connected (@b) stays.
        b.bind("@c", [3; 32], |id| id == "@b");
        assert_eq!(b.len(), 2);
        assert_eq!(b.check("@a", &[9; 32]), Binding::New);
        assert_eq!(b.check("@b", &[9; 32]), Binding::Collides);
    }

    #[test]
    fn seen_signatures_are_refused_then_forgotten() {
        let mut s = SeenSigs::new(2);
        let sig = STANDARD.encode([7u8; 64]);
        assert_eq!(s.admit(&sig, 1_000, 0), Ok(()));
        assert_eq!(s.admit(&sig, 1_000, 10), Err(Replay::Seen));
        let other = STANDARD.encode([8u8; 64]);
        assert_eq!(s.admit(&other, 1_000, 10), Ok(()));
        let third = STANDARD.encode([9u8; 64]);
        assert_eq!(s.admit(&third, 1_000, 10), Err(Replay::Full));
        // After the window the memory is free again.
        assert_eq!(s.admit(&third, 3_000, 1_001), Ok(()));
        assert_eq!(s.len(), 1);
        assert!(!s.contains(&sig));
    }

    #[test]
    fn allowlist_reads_pems_exports_and_arrays_with_line_numbers() {
        let (a, b, c) = (
            Identity::generate("a").unwrap(),
            Identity::generate("b").unwrap(),
            Identity::generate("c").unwrap(),
        );
        let text = format!(
            "# team keys\n{}\n{}\n[{}]\n",
            a.pubkey,
            b.export(),
            c.export()
        );
        let list = Allowlist::parse(&text).unwrap();
        assert_eq!(list.len(), 3);
        for k in [&a, &b, &c] {
            let key = identity::parse_pubkey(&k.pubkey).unwrap();
            assert!(list.allows(&key.to_bytes()));
        }
        assert!(Allowlist::parse("").unwrap().is_empty());
        let bad = format!("{}\nhello\n", a.pubkey);
        let (line, why) = Allowlist::parse(&bad).unwrap_err();
        assert_eq!(line, 5, "{why}");
        let (line, _) = Allowlist::parse("\n\n{\"name\":\"x\"}").unwrap_err();
        assert_eq!(line, 3);
        let (line, _) = Allowlist::parse("# c\n{\"pubkey\": 5").unwrap_err();
        assert_eq!(line, 2);
    }

    #[test]
    fn challenge_text_is_the_documented_one() {
        let c = Challenge::new(1_764_000_000_000, 60_000).unwrap();
        assert!(c.id.starts_with("chal_"));
        assert_eq!(c.nonce.len(), 32);
        assert_eq!(c.expires_at, 1_764_000_060_000);
        assert_eq!(
            c.signing_text(1_764_000_000_123.0),
            format!("AGENTCHAT_AUTH|{}|{}|1764000000123", c.nonce, c.id)
        );
    }
}
