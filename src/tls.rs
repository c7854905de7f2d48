//! TLS for the relay (`wss://`), its clients and the page server
//! (`https://`), on rustls with the `ring` provider (issue 15): loading and
//! checking PEM certificate and key files so a bad file is named with what is
//! wrong, the client's trust store (the system's, plus `--ca`), handshakes
//! with a deadline, and [`TlsStream`], one TLS session that a reader thread
//! and the socket's single writer share. Not here: WebSocket framing, or
//! who writes when (the relay's `writer`, the client's owner).
//!
//! Why [`TlsStream`] is not rustls' `StreamOwned`: a `StreamOwned` in a
//! mutex must be locked for the whole blocking `read(2)`, so a writer would
//! wait for the peer to speak. Here the socket is read *without* the lock,
//! and the lock guards only rustls' memory (decrypting what was read,
//! encrypting what is to be sent): locks guard memory, never I/O. Records
//! are encrypted by [`TlsStream::seal`] into bytes the socket's one writer
//! sends like any others, so the relay's single writer thread keeps its
//! non-blocking vectored sends.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, Connection, RootCertStore, ServerConfig};

/// How long a TLS handshake may take, start to finish (`accept`, `connect`).
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// The one crypto provider in the binary: ring, with the TLS 1.3 AES-GCM
/// suites (AES-128-GCM is the one every TLS 1.3 peer must offer, RFC 8446
/// §9.1) and X25519 / P-256 key exchange. Not ring's `default_provider()`,
/// whose ChaCha20 suite and P-384 exchange would cost ~60 KiB of the 4 MiB
/// budget. Also installed as the process default, which the vendored
/// tiny_http's TLS backend uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, kx_group};
    static P: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let p = Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: vec![
                cipher_suite::TLS13_AES_128_GCM_SHA256,
                cipher_suite::TLS13_AES_256_GCM_SHA384,
            ],
            kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
            signature_verification_algorithms: SIG_ALGS,
            secure_random: &Rng,
            key_provider: &Keys,
        });
        let _ = rustls::crypto::CryptoProvider::install_default((*p).clone());
        p
    })
    .clone()
}

#[derive(Debug)]
struct Rng;

impl rustls::crypto::SecureRandom for Rng {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        use ring::rand::SecureRandom;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

#[derive(Debug)]
struct Keys;

impl rustls::crypto::KeyProvider for Keys {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        rustls::crypto::ring::sign::any_supported_type(&key_der)
    }
}

/// Signature algorithms for verifying peers: ring's, as rustls' own ring
/// provider lists them (RSA, ECDSA P-256/P-384, Ed25519).
static SIG_ALGS: rustls::crypto::WebPkiSupportedAlgorithms = {
    use rustls::SignatureScheme as S;
    use webpki::ring as w;
    rustls::crypto::WebPkiSupportedAlgorithms {
        all: &[
            w::ECDSA_P256_SHA256,
            w::ECDSA_P256_SHA384,
            w::ECDSA_P384_SHA256,
            w::ECDSA_P384_SHA384,
            w::ED25519,
            w::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            w::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            w::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            w::RSA_PKCS1_2048_8192_SHA256,
            w::RSA_PKCS1_2048_8192_SHA384,
            w::RSA_PKCS1_2048_8192_SHA512,
            w::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            w::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            w::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        mapping: &[
            (
                S::ECDSA_NISTP384_SHA384,
                &[w::ECDSA_P384_SHA384, w::ECDSA_P256_SHA384],
            ),
            (
                S::ECDSA_NISTP256_SHA256,
                &[w::ECDSA_P256_SHA256, w::ECDSA_P384_SHA256],
            ),
            (S::ED25519, &[w::ED25519]),
            (S::RSA_PSS_SHA512, &[w::RSA_PSS_2048_8192_SHA512_LEGACY_KEY]),
            (S::RSA_PSS_SHA384, &[w::RSA_PSS_2048_8192_SHA384_LEGACY_KEY]),
            (S::RSA_PSS_SHA256, &[w::RSA_PSS_2048_8192_SHA256_LEGACY_KEY]),
            (S::RSA_PKCS1_SHA512, &[w::RSA_PKCS1_2048_8192_SHA512]),
            (S::RSA_PKCS1_SHA384, &[w::RSA_PKCS1_2048_8192_SHA384]),
            (S::RSA_PKCS1_SHA256, &[w::RSA_PKCS1_2048_8192_SHA256]),
        ],
    }
};

/// A certificate or key file that cannot be used: which file and why. The
/// CLI prints it and exits 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    pub why: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.why)
    }
}

fn file_error(path: &Path, why: impl Into<String>) -> FileError {
    FileError {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Reads a whole file, naming a missing or unreadable one.
fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => file_error(path, "no such file"),
        io::ErrorKind::PermissionDenied => file_error(path, "cannot read it: permission denied"),
        _ => file_error(path, format!("cannot read it: {e}")),
    })
}

/// Every certificate in a PEM file, in order (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let pem = read(path)?;
    certs_from_pem(path, &pem)
}

fn certs_from_pem(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(
            path,
            "not a PEM certificate file: no -----BEGIN CERTIFICATE----- block",
        ));
    }
    for c in &certs {
        if let Err(e) = Validity::of(c) {
            return Err(file_error(
                path,
                format!("not a valid X.509 certificate: {e}"),
            ));
        }
    }
    Ok(certs)
}

/// A PEM private key: PKCS#8 (RSA, ECDSA, Ed25519), PKCS#1 or SEC1.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, FileError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "not a PEM private key: no -----BEGIN PRIVATE KEY----- (or RSA / EC PRIVATE KEY) block".to_string()
            }
            other => format!("not a PEM private key: {other}"),
        };
        file_error(path, why)
    })
}

/// A certificate's validity period, in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
}

impl Validity {
    /// Reads `tbsCertificate.validity` (RFC 5280 §4.1) with the `der`
    /// crate's reader, skipping every other field unparsed: the whole
    /// x509-cert decoder cost binary size for two dates.
    pub fn of(cert: &CertificateDer<'_>) -> Result<Validity, String> {
        use der::asn1::{AnyRef, GeneralizedTime, UtcTime};
        use der::{Decode, Reader, SliceReader, Tag, TagNumber};
        fn time<'a, R: Reader<'a>>(r: &mut R) -> der::Result<u64> {
            Ok(match r.peek_tag()? {
                Tag::UtcTime => UtcTime::decode(r)?.to_unix_duration().as_secs(),
                _ => GeneralizedTime::decode(r)?.to_unix_duration().as_secs(),
            })
        }
        let bad = |e: der::Error| format!("not an X.509 certificate: {e}");
        let mut r = SliceReader::new(cert.as_ref()).map_err(bad)?;
        let validity = r
            .sequence(|c| {
                let v = c.sequence(|tbs| {
                    let version = Tag::ContextSpecific {
                        constructed: true,
                        number: TagNumber::N0,
                    };
                    if tbs.peek_tag()? == version {
                        AnyRef::decode(tbs)?;
                    }
                    AnyRef::decode(tbs)?; // serialNumber
                    AnyRef::decode(tbs)?; // signature
                    AnyRef::decode(tbs)?; // issuer
                    let v = tbs.sequence(|v| Ok((time(v)?, time(v)?)))?;
                    let rest = tbs.remaining_len();
                    tbs.read_slice(rest)?;
                    Ok(v)
                })?;
                let rest = c.remaining_len();
                c.read_slice(rest)?;
                Ok(v)
            })
            .map_err(bad)?;
        if !r.is_finished() {
            return Err("not an X.509 certificate: trailing data".into());
        }
        Ok(Validity {
            not_before: validity.0,
            not_after: validity.1,
        })
    }

    /// Whole days from `now` until expiry (negative once expired).
    pub fn days_left(&self, now: u64) -> i64 {
        (self.not_after as i64 - now as i64).div_euclid(86_400)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-12-01 20:25 UTC` for messages.
pub fn date(secs: u64) -> String {
    crate::util::rfc3339_ms(secs.saturating_mul(1000))
        .get(..16)
        .map(|s| format!("{} UTC", s.replace('T', " ")))
        .unwrap_or_default()
}

/// A server's certificate and key, checked: both files exist, are PEM, the
/// leaf certificate is valid now and the key is the certificate's.
pub struct ServerIdentity {
    pub config: Arc<ServerConfig>,
    /// The files as read, for servers that build their own config from PEM
    /// (the page server's tiny_http).
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub validity: Validity,
}

/// Loads `--cert` and `--key`; every failure names the file and what is
/// wrong with it.
pub fn load_server(cert: &Path, key: &Path) -> Result<ServerIdentity, FileError> {
    let cert_pem = read(cert)?;
    let chain = certs_from_pem(cert, &cert_pem)?;
    let key_pem = read(key)?;
    let key_der = load_key(key)?;
    let validity = Validity::of(&chain[0]).map_err(|e| file_error(cert, e))?;
    let now = now_secs();
    if validity.not_after < now {
        return Err(file_error(
            cert,
            format!("certificate expired on {}", date(validity.not_after)),
        ));
    }
    if validity.not_before > now {
        return Err(file_error(
            cert,
            format!(
                "certificate is not valid until {}",
                date(validity.not_before)
            ),
        ));
    }
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => file_error(
                key,
                format!(
                    "this key does not match the certificate in {}",
                    cert.display()
                ),
            ),
            other => file_error(key, format!("cannot use this key: {other}")),
        })?;
    Ok(ServerIdentity {
        config: Arc::new(config),
        cert_pem,
        key_pem,
        validity,
    })
}

/// The client side's trust: the system's store (`/etc/ssl/certs` and
/// friends, as openssl finds them) plus every certificate in `extra` (a
/// private CA, or a self-signed relay's own certificate).
pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    // Unreadable entries of the system store are skipped: one broken file
    // must not stop verification against the others.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for c in extra {
        roots
            .add(c.clone())
            .map_err(|e| format!("cannot trust this CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(
            "no trusted certificates: the system trust store is empty and no --ca was given".into(),
        );
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whether a client trusting the system's store plus `extra` (as `--ca`
/// does) would accept `chain` (leaf first) from a server it reached as
/// `host`: the deploy command's health check connects to `localhost` with
/// the certificate file as its `--ca`.
pub fn would_verify(
    chain: &[CertificateDer<'static>],
    host: &str,
    extra: &[CertificateDer<'static>],
) -> bool {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return false;
    };
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots.add_parsable_certificates(extra.iter().cloned());
    let Ok(verifier) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
    else {
        return false;
    };
    let Ok(name) = ServerName::try_from(host.to_string()) else {
        return false;
    };
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &name,
            &[],
            rustls::pki_types::UnixTime::now(),
        )
        .is_ok()
}

/// Why a handshake failed, in words for one line on stderr.
pub fn describe(e: &io::Error) -> String {
    use rustls::{CertificateError, Error as TlsError};
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<TlsError>()) else {
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "TLS handshake timed out".into(),
            io::ErrorKind::UnexpectedEof => {
                "the peer closed the connection during the TLS handshake".into()
            }
            _ => format!("TLS handshake failed: {e}"),
        };
    };
    match tls {
        TlsError::InvalidCertificate(c) => {
            let why = match c {
                CertificateError::UnknownIssuer => {
                    "its certificate is not signed by a trusted authority (pass --ca FILE to trust a private CA)".to_string()
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "its certificate has expired".into()
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "its certificate is not valid yet".into()
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "its certificate is for a different host name".into()
                }
                CertificateError::BadSignature => "its certificate's signature is wrong".into(),
                other if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                    "it presents a CA certificate as its own (a self-signed relay certificate needs basicConstraints=CA:FALSE; see docs/tls.md)".into()
                }
                other => format!("its certificate is not trusted: {other:?}"),
            };
            format!("certificate verification failed: {why}")
        }
        TlsError::InvalidMessage(_) | TlsError::InappropriateMessage { .. } => {
            "the server did not answer with TLS (is it a ws:// server?)".into()
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

/// A TLS session over one socket, shared (cheap clones) by a reader and the
/// socket's single writer. `Read` decrypts; `Write` encrypts and writes the
/// records itself, for owners that write on their own thread (the CLI
/// client, a server before it hands the socket to its writer). The relay's
/// writer thread uses [`TlsStream::seal`] instead and sends the records
/// with everything else it writes.
#[derive(Clone)]
pub struct TlsStream {
    sock: Arc<TcpStream>,
    conn: Arc<Mutex<Connection>>,
}

impl TlsStream {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The socket underneath (timeouts, shutdown, the writer's epoll).
    pub fn tcp(&self) -> &Arc<TcpStream> {
        &self.sock
    }

    /// Encrypts `plain` into TLS records and returns them with anything
    /// rustls had queued before (alerts, key updates), in order. Only the
    /// socket's one writer may call this, and it must send the bytes in the
    /// order it got them. No I/O under the lock.
    pub fn seal(&self, plain: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut conn = self.lock();
        let mut rest = plain;
        loop {
            // rustls caps its unsent buffer; draining after each write keeps
            // any message size going through.
            let n = conn.writer().write(rest)?;
            rest = &rest[n..];
            while conn.wants_write() {
                conn.write_tls(&mut out)?;
            }
            if rest.is_empty() {
                return Ok(out);
            }
            if n == 0 {
                return Err(io::Error::other("TLS session refused more data"));
            }
        }
    }

    /// A close_notify alert (RFC 8446 §6.1) as bytes for the writer, after
    /// which nothing more is sealed.
    pub fn close_notify(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut conn = self.lock();
        conn.send_close_notify();
        while conn.wants_write() {
            if conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        out
    }

    /// Feeds bytes read from the socket to rustls. Anything rustls wants to
    /// send in reply stays queued for the writer's next [`seal`].
    fn absorb(&self, mut raw: &[u8]) -> io::Result<()> {
        let mut conn = self.lock();
        if raw.is_empty() {
            // End of stream: rustls tells a clean close_notify from a cut.
            conn.read_tls(&mut raw)?;
            conn.process_new_packets().map_err(io::Error::other)?;
            return Ok(());
        }
        while !raw.is_empty() {
            conn.read_tls(&mut raw)?;
            conn.process_new_packets().map_err(io::Error::other)?;
        }
        Ok(())
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.lock().reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Ok(0) is a clean close_notify; a cut connection is
                // UnexpectedEof. Either ends the reader.
                other => return other,
            }
            // No plaintext buffered: block on the socket without the lock.
            let mut raw = [0u8; 4096];
            let n = (&*self.sock).read(&mut raw)?;
            self.absorb(&raw[..n])?;
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let records = self.seal(buf)?;
        (&*self.sock).write_all(&records)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.sock).flush()
    }
}

/// Runs a handshake to completion on the calling thread, within
/// [`HANDSHAKE_LIMIT`] overall (not per read: a peer trickling one byte at
/// a time is cut off too). Leaves the socket with no timeouts.
fn handshake(sock: TcpStream, mut conn: Connection, limit: Duration) -> io::Result<TlsStream> {
    let deadline = Instant::now() + limit;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            ));
        }
        sock.set_read_timeout(Some(left))?;
        sock.set_write_timeout(Some(left))?;
        conn.complete_io(&mut &sock)?;
    }
    // TLS 1.3 session tickets and the client's last flight go out now,
    // before anyone else writes this socket.
    while conn.wants_write() {
        conn.write_tls(&mut &sock)?;
    }
    sock.set_read_timeout(None)?;
    sock.set_write_timeout(None)?;
    Ok(TlsStream {
        sock: Arc::new(sock),
        conn: Arc::new(Mutex::new(conn)),
    })
}

/// The server side of a handshake on an accepted socket. A client that is
/// not speaking TLS (plain `ws://`, HTTP) fails here and is dropped.
pub fn accept(
    sock: TcpStream,
    config: &Arc<ServerConfig>,
    limit: Duration,
) -> io::Result<TlsStream> {
    let conn = rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    handshake(sock, Connection::Server(conn), limit)
}

/// The client side: verifies the server's certificate for `host`.
pub fn connect(
    sock: TcpStream,
    config: &Arc<ClientConfig>,
    host: &str,
    limit: Duration,
) -> io::Result<TlsStream> {
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{host}' is not a valid TLS server name"),
        )
    })?;
    let conn = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    handshake(sock, Connection::Client(conn), limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, body: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wb-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let p = dir.join(name);
        std::fs::write(&p, body).expect("write");
        p
    }

    #[test]
    fn missing_and_non_pem_files_are_named() {
        let missing = Path::new("/nonexistent/cert.pem");
        let e = load_certs(missing).expect_err("missing");
        assert_eq!(e.to_string(), "/nonexistent/cert.pem: no such file");
        let junk = tmp("junk.pem", b"hello, not a certificate\n");
        let e = load_certs(&junk).expect_err("junk");
        assert!(
            e.to_string().contains("junk.pem: not a PEM certificate"),
            "{e}"
        );
        let e = load_key(&junk).expect_err("junk key");
        assert!(
            e.to_string().contains("junk.pem: not a PEM private key"),
            "{e}"
        );
    }

    #[test]
    fn dates_read_as_utc() {
        assert_eq!(date(0), "1970-01-01 00:00 UTC");
        let v = Validity {
            not_before: 0,
            not_after: 86_400 * 10,
        };
        assert_eq!(v.days_left(86_400 * 3), 7);
        assert_eq!(v.days_left(86_400 * 11), -1);
    }
}
