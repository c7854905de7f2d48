//! Ed25519 identities as AgentChat 0.3.0 keeps them: the identity file
//! (`{"name","pubkey","privkey","created"}`, SPKI and PKCS#8 PEM), the stable
//! agent id derived from the public key, and signing and verifying the texts
//! `signing` builds. All cryptography (Ed25519, SHA-256) is ring's, the
//! provider rustls already links for TLS: one implementation in the binary.
//!
//! Not here: what text a message signs (`signing`), or the relay's use of ids.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

/// The DER of an Ed25519 SubjectPublicKeyInfo up to the key (RFC 8410 §4:
/// SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (32 bytes) }). DER has
/// one encoding per value and RFC 8410 forbids parameters, so this prefix and
/// 32 bytes are the whole of every valid Ed25519 SPKI.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The DER of a version 1 PKCS#8 Ed25519 private key up to the 32-byte seed
/// (RFC 8410 §7): what Node's `export({type:'pkcs8'})` writes.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 public key: its 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The canonical PEM text: what Node's
    /// `createPublicKey().export({type:'spki',format:'pem'})` writes.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem("PUBLIC KEY", &der)
    }

    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }
}

/// PEM armour as Node and OpenSSL write it: base64 in 64-column lines, LF,
/// a trailing newline.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside PEM armour labelled `label`, read as leniently as Node
/// reads it (surrounding whitespace, CRLF, any line length).
fn unpem(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .trim()
        .strip_prefix(begin.as_str())
        .and_then(|r| r.strip_suffix(end.as_str()))
        .ok_or_else(|| format!("not a PEM {} ({begin} … {end})", label.to_lowercase()))?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(b64)
        .map_err(|_| format!("a PEM {} with bad base64", label.to_lowercase()))
}

/// Where 0.3.0 users keep their identity: `~/.agentchat/identity.json`.
pub fn default_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".agentchat").join("identity.json"))
}

/// The agent id a public key gets: the first 8 hex digits of SHA-256 over the
/// PEM text exactly as sent (newlines included), so one key keeps one id.
pub fn agent_id(pubkey_pem: &str) -> String {
    hex_prefix(pubkey_pem, 8)
}

/// 0.3.0's fingerprint: the first 16 hex digits of the same hash.
pub fn fingerprint(pubkey_pem: &str) -> String {
    hex_prefix(pubkey_pem, 16)
}

/// SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::util::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn hex_prefix(text: &str, len: usize) -> String {
    let mut hex = sha256_hex(text.as_bytes());
    hex.truncate(len);
    hex
}

/// An Ed25519 public key from SPKI PEM (`-----BEGIN PUBLIC KEY-----`), as
/// IDENTIFY carries it. The armour is read as leniently as Node's
/// `createPublicKey` reads it (surrounding whitespace, CRLF, any line
/// length); the DER inside must be an Ed25519 SPKI. Anything else (another
/// algorithm, a private key, bad base64) is refused.
pub fn parse_pubkey(pem: &str) -> Result<PublicKey, String> {
    if pem.len() > 4096 {
        return Err("public key PEM is too long".into());
    }
    let der = unpem(pem, "PUBLIC KEY")?;
    match der.strip_prefix(&SPKI_PREFIX[..]) {
        Some(key) if key.len() == 32 => Ok(PublicKey(key.try_into().expect("32 bytes"))),
        _ => Err("not an Ed25519 public key in SPKI form".into()),
    }
}

/// Checks a base64 Ed25519 signature over `text`. Standard alphabet, padding
/// optional (0.3.0 sends it padded). ring's verification (BoringSSL's code)
/// refuses a non-canonical `S` and a key that is not a curve point; a
/// signature only verifies for the key that made it.
pub fn verify(key: &PublicKey, text: &str, sig_b64: &str) -> bool {
    let bytes = match STANDARD.decode(sig_b64) {
        Ok(b) => b,
        Err(_) => match STANDARD_NO_PAD.decode(sig_b64) {
            Ok(b) => b,
            Err(_) => return false,
        },
    };
    bytes.len() == 64
        && UnparsedPublicKey::new(&ED25519, &key.0)
            .verify(text.as_bytes(), &bytes)
            .is_ok()
}

/// The key pair in a PKCS#8 PEM private key (v1, as Node writes it, or v2
/// with the public key embedded), and its public key.
fn keypair(privkey_pem: &str) -> Result<(Ed25519KeyPair, PublicKey), String> {
    let not = |why: String| format!("privkey is not an Ed25519 PKCS#8 PEM ({why})");
    let der = unpem(privkey_pem, "PRIVATE KEY").map_err(not)?;
    let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| not(e.to_string()))?;
    let public = public_of(&key);
    Ok((key, public))
}

fn public_of(key: &Ed25519KeyPair) -> PublicKey {
    PublicKey(
        key.public_key()
            .as_ref()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes"),
    )
}

/// Why an identity could not be loaded or saved; `Display` is the message the
/// user sees, naming the file and what to do.
#[derive(Debug)]
pub enum IdentityError {
    NotFound(PathBuf),
    AlreadyExists(PathBuf),
    /// Readable or writable by group or others.
    Permissions(PathBuf, u32),
    /// Not valid JSON, a missing field, a bad PEM, or keys that don't match.
    Invalid(PathBuf, String),
    Io(PathBuf, io::Error),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::NotFound(p) => write!(
                f,
                "no identity file at {0}; create one with `workbench identity --generate --file {0}`",
                p.display()
            ),
            IdentityError::AlreadyExists(p) => write!(
                f,
                "an identity already exists at {}; pass --force to overwrite it (its key is lost)",
                p.display()
            ),
            IdentityError::Permissions(p, mode) => write!(
                f,
                "identity file {0} is accessible by group or others (mode {mode:03o}); \
                 it holds a private key: run `chmod 600 {0}`",
                p.display()
            ),
            IdentityError::Invalid(p, why) => {
                write!(f, "identity file {} is not usable: {why}", p.display())
            }
            IdentityError::Io(p, e) => write!(f, "identity file {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for IdentityError {}

/// The file's shape. Unknown keys (later versions add `rotations`) are ignored.
#[derive(Serialize, Deserialize)]
struct IdentityFile {
    name: String,
    pubkey: String,
    privkey: String,
    created: String,
}

/// A loaded or freshly generated identity. The public key PEM is kept exactly
/// as written in the file, because the agent id hashes that text.
pub struct Identity {
    pub name: String,
    pub pubkey: String,
    pub created: String,
    privkey: String,
    key: Ed25519KeyPair,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("agent_id", &self.agent_id())
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new keypair from 32 bytes of the kernel's randomness.
    pub fn generate(name: &str) -> io::Result<Identity> {
        let mut seed = [0u8; 32];
        File::open("/dev/urandom")?.read_exact(&mut seed)?;
        let mut der = PKCS8_V1_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        seed.fill(0);
        // The same bytes Node writes: SPKI and a v1 PKCS#8 (no embedded
        // public key), base64 in 64-column lines, LF, trailing newline.
        let privkey = pem("PRIVATE KEY", &der);
        der.fill(0);
        let (key, public) = keypair(&privkey).map_err(io::Error::other)?;
        Ok(Identity {
            name: name.to_string(),
            pubkey: public.to_pem(),
            created: iso_now(),
            privkey,
            key,
        })
    }

    /// Parses the file's text. `path` only names the file in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Identity, IdentityError> {
        let invalid = |why: String| IdentityError::Invalid(path.to_path_buf(), why);
        let file: IdentityFile =
            serde_json::from_str(text).map_err(|e| invalid(format!("bad JSON ({e})")))?;
        let (key, derived) = keypair(&file.privkey).map_err(invalid)?;
        let public = parse_pubkey(&file.pubkey).map_err(|e| invalid(format!("pubkey is {e}")))?;
        if public != derived {
            return Err(invalid(
                "pubkey does not match privkey (the file was edited or damaged)".into(),
            ));
        }
        Ok(Identity {
            name: file.name,
            pubkey: file.pubkey,
            created: file.created,
            privkey: file.privkey,
            key,
        })
    }

    /// Loads an identity file, refusing one that group or others can access.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let io_err = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => IdentityError::NotFound(path.to_path_buf()),
            _ => IdentityError::Io(path.to_path_buf(), e),
        };
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(IdentityError::Invalid(
                path.to_path_buf(),
                "not a regular file".into(),
            ));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permissions(path.to_path_buf(), mode));
        }
        // An identity file is well under a kilobyte; don't read a huge one.
        let mut text = String::new();
        file.take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => {
                    IdentityError::Invalid(path.to_path_buf(), "not UTF-8 text".into())
                }
                _ => IdentityError::Io(path.to_path_buf(), e),
            })?;
        Identity::from_json(&text, path)
    }

    /// The file's text, laid out as 0.3.0's `JSON.stringify(data, null, 2)`.
    pub fn to_json(&self) -> String {
        let file = IdentityFile {
            name: self.name.clone(),
            pubkey: self.pubkey.clone(),
            privkey: self.privkey.clone(),
            created: self.created.clone(),
        };
        serde_json::to_string_pretty(&file).expect("serializing strings cannot fail")
    }

    /// Writes the file with mode 0600, creating missing directories with mode
    /// 0700. An existing file is replaced only with `force` (atomically, by
    /// rename); otherwise the file is created exclusively.
    pub fn save(&self, path: &Path, force: bool) -> Result<(), IdentityError> {
        let io_err = |e: io::Error| IdentityError::Io(path.to_path_buf(), e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err)?;
            }
        }
        let data = self.to_json();
        if force {
            return crate::util::write_atomic(path, data.as_bytes(), 0o600).map_err(io_err);
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => IdentityError::AlreadyExists(path.to_path_buf()),
                _ => io_err(e),
            })?;
        let written = f.write_all(data.as_bytes()).and_then(|()| f.sync_data());
        if let Err(e) = written {
            let _ = fs::remove_file(path);
            return Err(io_err(e));
        }
        Ok(())
    }

    pub fn agent_id(&self) -> String {
        agent_id(&self.pubkey)
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.pubkey)
    }

    /// Signs `text` (its UTF-8 bytes); the signature in standard base64.
    pub fn sign(&self, text: &str) -> String {
        STANDARD.encode(self.key.sign(text.as_bytes()).as_ref())
    }

    #[cfg(test)]
    pub fn verifying_key(&self) -> PublicKey {
        public_of(&self.key)
    }

    /// What `--export` prints: everything but the private key, as 0.3.0's
    /// `JSON.stringify(identity.export(), null, 2)` lays it out.
    pub fn export(&self) -> String {
        #[derive(Serialize)]
        struct Export<'a> {
            name: &'a str,
            pubkey: &'a str,
            created: &'a str,
        }
        let e = Export {
            name: &self.name,
            pubkey: &self.pubkey,
            created: &self.created,
        };
        serde_json::to_string_pretty(&e).expect("serializing strings cannot fail")
    }
}

/// Now as JavaScript's `new Date().toISOString()` writes it:
/// `2026-02-02T19:57:15.123Z`.
fn iso_now() -> String {
    let ms = crate::util::now_ms();
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors(text: &str) -> Value {
        serde_json::from_str(text).expect("vector file")
    }

    fn fixture(name: &str) -> Identity {
        let text = match name {
            "node" => include_str!("../../tests/vectors/node_identity.json"),
            "python" => include_str!("../../tests/vectors/python_identity.json"),
            "workbench" => include_str!("../../tests/vectors/workbench_identity.json"),
            _ => unreachable!(),
        };
        Identity::from_json(text, Path::new(name)).expect("fixture loads")
    }

    /// A file Node wrote loads here; its id and fingerprint are Node's; we
    /// reproduce every signature Node made with it (Ed25519 is deterministic)
    /// and verify Node's signatures with its public key.
    #[test]
    fn node_identity_and_signatures() {
        let id = fixture("node");
        let v = vectors(include_str!("../../tests/vectors/node_vectors.json"));
        assert_eq!(id.agent_id(), v["agent_id"].as_str().unwrap());
        assert_eq!(id.fingerprint(), v["fingerprint"].as_str().unwrap());
        let key = parse_pubkey(&id.pubkey).unwrap();
        for s in v["signatures"].as_array().unwrap() {
            let text = s["signed"].as_str().unwrap();
            let sig = s["sig"].as_str().unwrap();
            assert_eq!(id.sign(text), sig, "signing {text:?}");
            assert!(verify(&key, text, sig), "verifying {text:?}");
            assert!(!verify(&key, &format!("{text}x"), sig), "tampered text");
        }
    }

    /// Python's `cryptography` (OpenSSL) key: same checks.
    #[test]
    fn python_identity_and_signatures() {
        let id = fixture("python");
        let v = vectors(include_str!("../../tests/vectors/python_vectors.json"));
        assert_eq!(id.agent_id(), v["agent_id"].as_str().unwrap());
        let key = parse_pubkey(&id.pubkey).unwrap();
        for s in v["signatures"].as_array().unwrap() {
            let text = s["signed"].as_str().unwrap();
            assert_eq!(id.sign(text), s["sig"].as_str().unwrap());
            assert!(verify(&key, text, s["sig"].as_str().unwrap()));
        }
    }

    /// A file workbench wrote loaded in Node, which signed with it: our
    /// signatures are Node's, byte for byte.
    #[test]
    fn workbench_identity_signs_like_node() {
        let id = fixture("workbench");
        let v = vectors(include_str!(
            "../../tests/vectors/node_signs_workbench.json"
        ));
        assert_eq!(id.agent_id(), v["agent_id"].as_str().unwrap());
        for s in v["signatures"].as_array().unwrap() {
            assert_eq!(
                id.sign(s["signed"].as_str().unwrap()),
                s["sig"].as_str().unwrap()
            );
        }
    }

    /// We write PEMs byte-identical in form to Node's and Python's.
    #[test]
    fn generated_pems_have_the_node_layout() {
        let id = Identity::generate("t").unwrap();
        assert!(id
            .pubkey
            .starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
        assert!(id.pubkey.ends_with("\n-----END PUBLIC KEY-----\n"));
        assert_eq!(id.pubkey.len(), fixture("node").pubkey.len());
        assert!(id
            .privkey
            .starts_with("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI"));
        assert_eq!(id.privkey.len(), fixture("node").privkey.len());
        assert_eq!(id.privkey.len(), fixture("python").privkey.len());
        // Round trip through our own file format.
        let back = Identity::from_json(&id.to_json(), Path::new("t")).unwrap();
        assert_eq!(back.pubkey, id.pubkey);
        assert_eq!(back.sign("x"), id.sign("x"));
        assert_eq!(id.created.len(), "2026-02-02T19:57:15.123Z".len());
        assert!(id.created.ends_with('Z'));
    }

    #[test]
    fn export_has_no_private_key_and_keeps_0_3_0_key_order() {
        let e = fixture("node").export();
        assert!(e.starts_with("{\n  \"name\": \"node-vector\",\n  \"pubkey\": "));
        assert!(e.contains("\"created\""));
        assert!(!e.contains("PRIVATE"));
    }

    #[test]
    fn to_json_matches_node_layout() {
        let node_text = include_str!("../../tests/vectors/node_identity.json");
        let id = fixture("node");
        assert_eq!(id.to_json(), node_text);
    }

    #[test]
    fn id_hashes_the_exact_text() {
        let pem = fixture("node").pubkey;
        let crlf = pem.replace('\n', "\r\n");
        assert_ne!(agent_id(&pem), agent_id(&crlf));
        assert_eq!(agent_id(&pem).len(), 8);
        assert!(agent_id(&pem).chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn parse_pubkey_refuses_what_is_not_an_ed25519_spki_pem() {
        let node = fixture("node");
        assert!(parse_pubkey(&node.pubkey).is_ok());
        assert!(parse_pubkey(&node.privkey).is_err());
        assert!(parse_pubkey("hello").is_err());
        assert!(parse_pubkey("").is_err());
        assert!(parse_pubkey(&node.pubkey.replace("MCowBQYDK2Vw", "MCowBQYDK2Vx")).is_err());
        // Armour variations Node accepts are accepted too.
        let pem = &node.pubkey;
        for variant in [
            pem.trim_end().to_string(),
            pem.replace('\n', "\r\n"),
            format!("  {pem}\n\n"),
            pem.replacen("MCowBQYD", "MCowBQYD\n", 1),
        ] {
            assert!(parse_pubkey(&variant).is_ok(), "{variant:?}");
        }
        // 32 bytes that are not a point on the curve.
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend([0xffu8; 32]);
        der[12] = 0x02;
        let not_a_point = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(&der)
        );
        // ring checks the point when it verifies, not when the key is read:
        // such a key parses, and nothing ever verifies with it.
        let key = parse_pubkey(&not_a_point).unwrap();
        let sig = fixture("node").sign("hello");
        assert!(!verify(&key, "hello", &sig));
        // An RSA key (from openssl) is not Ed25519.
        let rsa = "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf\n9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END PUBLIC KEY-----\n";
        assert!(parse_pubkey(rsa).is_err());
    }

    #[test]
    fn tampered_files_are_refused_with_a_reason() {
        let node = fixture("node");
        let python = fixture("python");
        let p = Path::new("f.json");
        let swap = format!(
            "{{\"name\":\"x\",\"pubkey\":{},\"privkey\":{},\"created\":\"c\"}}",
            Value::String(python.pubkey.clone()),
            Value::String(node.privkey.clone())
        );
        let err = Identity::from_json(&swap, p).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        let err = Identity::from_json("{not json", p).unwrap_err().to_string();
        assert!(err.contains("bad JSON"), "{err}");
        let err = Identity::from_json("{\"name\":\"x\"}", p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad JSON"), "{err}");
        let bad_pem = node.to_json().replace("MC4CAQAw", "MC4CAQA!");
        let err = Identity::from_json(&bad_pem, p).unwrap_err().to_string();
        assert!(err.contains("privkey"), "{err}");
    }

    #[test]
    fn verify_refuses_garbage() {
        let id = fixture("node");
        let key = id.verifying_key();
        let sig = id.sign("hello");
        assert!(verify(&key, "hello", &sig));
        assert!(verify(&key, "hello", sig.trim_end_matches('=')));
        assert!(!verify(&key, "hello", "not base64!"));
        assert!(!verify(&key, "hello", &STANDARD.encode([0u8; 63])));
        assert!(!verify(&key, "hello", &STANDARD.encode([0u8; 64])));
        assert!(!verify(&fixture("python").verifying_key(), "hello", &sig));
    }
}
