//! HTTPS for the page server (`workbench serve --cert/--key`, or
//! `WORKBENCH_CERT`/`WORKBENCH_KEY` for the servers `workbench mcp`
//! starts): the checked certificate and key, turned into tiny_http's TLS
//! config. The TLS itself is the vendored tiny_http's TLS layer
//! (vendor/tiny_http/src/util/refined_tcp_stream.rs): handshakes on the connection's own
//! thread, plain HTTP only from loopback (the owner's own tools). Not here:
//! routes, or anything that knows about HTTP.

use std::path::{Path, PathBuf};

use crate::tls::{FileError, Validity};

/// Environment variables that give `workbench serve` (and so every server
/// `workbench mcp` starts, which inherit them) a certificate and key.
pub const CERT_ENV: &str = "WORKBENCH_CERT";
pub const KEY_ENV: &str = "WORKBENCH_KEY";

/// A page server's certificate chain and key, checked by `crate::tls`.
#[derive(Clone)]
pub struct PageTls {
    pub cert: PathBuf,
    /// rustls' server config (workbench's provider), for the vendored
    /// tiny_http's TLS layer.
    pub config: std::sync::Arc<rustls::ServerConfig>,
    pub validity: Validity,
}

impl std::fmt::Debug for PageTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("PageTls").field("cert", &self.cert).finish()
    }
}

impl PageTls {
    /// Reads and checks the files; an error names the file and what is wrong.
    pub fn load(cert: &Path, key: &Path) -> Result<PageTls, FileError> {
        let id = crate::tls::load_server(cert, key)?;
        Ok(PageTls {
            cert: cert.to_path_buf(),
            config: id.config,
            validity: id.validity,
        })
    }
}

/// `WORKBENCH_CERT` and `WORKBENCH_KEY`, if set (both or neither).
pub fn env_files() -> Result<Option<(PathBuf, PathBuf)>, String> {
    let get = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    match (get(CERT_ENV), get(KEY_ENV)) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => Ok(Some((c, k))),
        _ => Err(format!("{CERT_ENV} and {KEY_ENV} go together")),
    }
}
