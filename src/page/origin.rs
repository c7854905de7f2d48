//! Who the page server is: the names and origins a browser may use to reach
//! it. `Host` is checked on every request (a DNS-rebinding name gets
//! nothing), `Origin` on every POST and on the `/ws` upgrade (a page on any
//! other site gets nothing). This is not authentication: a client that sends
//! no `Origin` is not a browser acting for another site (browsers send it on
//! every POST and every WebSocket handshake), so it is judged by its token or
//! key alone.

use std::collections::HashMap;
use std::net::{IpAddr, UdpSocket};
use std::sync::Mutex;

/// The server's own names, plus the allow-list.
pub struct Origins {
    port: u16,
    /// Lower-case host names and IP literals (IPv6 without brackets).
    names: Vec<String>,
    /// Exact origins allowed besides our own (`--allow-origin http://h:p`).
    extra_origins: Vec<String>,
    /// Bound to 0.0.0.0 / ::: any address of this machine reaches us.
    wildcard: bool,
    /// HTTPS server: `https://` origins of our names are ours too.
    https: bool,
    /// IP literals already found to be (or not to be) ours.
    local_ips: Mutex<HashMap<IpAddr, bool>>,
}

/// Entries of the local-address cache; a client spraying literals cannot grow it.
const LOCAL_IP_CACHE: usize = 256;

fn normalize_host(h: &str) -> String {
    let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
    h.strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .map(str::to_string)
        .unwrap_or(h)
}

/// Splits `name`, `name:port`, `[v6]` or `[v6]:port` into host and port.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((normalize_host(host), port));
    }
    match s.rsplit_once(':') {
        // A bare IPv6 literal has colons but no port.
        Some((h, _)) if h.contains(':') => Some((normalize_host(s), None)),
        Some((h, p)) => Some((normalize_host(h), Some(p.parse().ok()?))),
        None => Some((normalize_host(s), None)),
    }
}

/// `scheme://host[:port]` → (scheme, host, effective port).
fn parse_origin(o: &str) -> Option<(String, String, u16)> {
    let (scheme, rest) = o.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = split_host_port(rest)?;
    Some((scheme, host, port.unwrap_or(default)))
}

fn canonical_origin(o: &str) -> Option<String> {
    let (scheme, host, port) = parse_origin(o)?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(format!("{scheme}://{host}:{port}"))
}

/// The key that lets an MCP Apps frame open `/app/<key>/ws` from any origin
/// (a sandboxed frame sends `Origin: null`). Derived from the owner token,
/// so the MCP process that relays the frame can compute it and nobody
/// without the token can; it only opens the push-only viewer socket.
pub fn app_key(token: &str) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(b"workbench-app-viewer\0");
    h.update(token.as_bytes());
    crate::util::hex(&h.finalize()[..16])
}

/// This machine's host name, without a libc call.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| normalize_host(&h))
        .filter(|h| !h.is_empty())
}

impl Origins {
    /// `bind` is the listening address, `public` the host shown in the URL,
    /// `allow` entries are full origins (`http://name:port`) or host names.
    pub fn new(bind: &str, port: u16, public: Option<&str>, allow: &[String]) -> Origins {
        let bind_n = normalize_host(bind);
        let wildcard = matches!(bind_n.as_str(), "0.0.0.0" | "::" | "");
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if !wildcard {
            names.push(bind_n);
        }
        if let Some(h) = hostname() {
            names.push(format!("{h}.local"));
            names.push(h);
        }
        if let Some(ip) = crate::sys::lan_ipv4() {
            names.push(ip.to_string());
        }
        if let Some(p) = public.filter(|p| !p.is_empty()) {
            names.push(normalize_host(p));
        }
        let mut extra_origins = Vec::new();
        for a in allow.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            match canonical_origin(a) {
                Some(o) => {
                    if let Some((_, h, _)) = parse_origin(&o) {
                        names.push(h);
                    }
                    extra_origins.push(o);
                }
                None => names.push(normalize_host(a)),
            }
        }
        names.sort_unstable();
        names.dedup();
        Origins {
            port,
            names,
            extra_origins,
            wildcard,
            https: false,
            local_ips: Mutex::new(HashMap::new()),
        }
    }

    /// The server speaks HTTPS (`--cert/--key`): its own origins are then
    /// `https://name:port` too (plain `http://` stays, for loopback).
    pub fn with_https(mut self, https: bool) -> Origins {
        self.https = https;
        self
    }

    /// Whether an IP literal is an address of this machine: binding a UDP
    /// socket to it succeeds only then (nothing is sent).
    fn is_local_ip(&self, ip: IpAddr) -> bool {
        let mut cache = self.local_ips.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&known) = cache.get(&ip) {
            return known;
        }
        let local = UdpSocket::bind((ip, 0)).is_ok();
        if cache.len() >= LOCAL_IP_CACHE {
            cache.clear();
        }
        cache.insert(ip, local);
        local
    }

    fn name_is_ours(&self, host: &str) -> bool {
        if self.names.iter().any(|n| n == host) {
            return true;
        }
        // A wildcard listener answers on every local address; an address
        // literal cannot be rebound by DNS, so it only needs to be ours.
        self.wildcard
            && host
                .parse::<IpAddr>()
                .is_ok_and(|ip| !ip.is_unspecified() && self.is_local_ip(ip))
    }

    /// `Host` (with or without port) names this server. Any IP literal
    /// passes: DNS rebinding needs a name, and a port mapping (Docker, NAT)
    /// means the address a browser used need not be one of ours.
    pub fn host_ok(&self, host: &str) -> bool {
        split_host_port(host)
            .is_some_and(|(h, _)| h.parse::<IpAddr>().is_ok() || self.name_is_ours(&h))
    }

    /// `Origin` is this server's own (http, one of our names, our port) or
    /// on the allow-list. `null` and anything unparsable are not.
    pub fn origin_ok(&self, origin: &str) -> bool {
        let Some((scheme, host, port)) = parse_origin(origin) else {
            return false;
        };
        let own_scheme = scheme == "http" || (self.https && scheme == "https");
        if own_scheme && port == self.port && self.name_is_ours(&host) {
            return true;
        }
        canonical_origin(origin).is_some_and(|o| self.extra_origins.contains(&o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(bind: &str, allow: &[&str]) -> Origins {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        Origins::new(bind, 8070, Some("bench.lab"), &allow)
    }

    #[test]
    fn host_header_must_name_us() {
        let o = o("127.0.0.1", &[]);
        for ok in [
            "127.0.0.1:8070",
            "localhost:8070",
            "LOCALHOST",
            "[::1]:8070",
            "bench.lab:9999",
        ] {
            assert!(o.host_ok(ok), "{ok}");
        }
        // Any address literal passes Host (no name to rebind); names must be ours.
        assert!(o.host_ok("203.0.113.9:8070"));
        for bad in [
            "evil.example:8070",
            "localhost.evil.example",
            "",
            "[::1",
            "a:b:c:d:x]",
        ] {
            assert!(!o.host_ok(bad), "{bad}");
        }
    }

    #[test]
    fn origin_must_match_scheme_name_and_port() {
        let o = o("127.0.0.1", &["http://proxy.example:9000", "tablet.lan"]);
        assert!(o.origin_ok("http://localhost:8070"));
        assert!(o.origin_ok("http://127.0.0.1:8070"));
        assert!(o.origin_ok("http://tablet.lan:8070"));
        assert!(o.origin_ok("http://PROXY.example:9000"));
        assert!(!o.origin_ok("http://localhost:9999"), "another local app");
        assert!(!o.origin_ok("http://localhost"), "port 80 is not ours");
        assert!(!o.origin_ok("https://localhost:8070"));
        let tls = self::o("127.0.0.1", &[]).with_https(true);
        assert!(tls.origin_ok("https://localhost:8070"));
        assert!(tls.origin_ok("https://127.0.0.1:8070"));
        assert!(tls.origin_ok("http://localhost:8070"));
        assert!(!tls.origin_ok("https://localhost:9999"));
        assert!(!tls.origin_ok("https://evil.example:8070"));
        assert!(!o.origin_ok("http://evil.example:8070"));
        assert!(
            !o.origin_ok("http://127.0.0.2:8070"),
            "bound to 127.0.0.1 only"
        );
        assert!(!o.origin_ok("null"));
        assert!(!o.origin_ok("http://localhost:8070/path"));
        assert!(!o.origin_ok("http://user@localhost:8070"));
    }

    #[test]
    fn wildcard_bind_accepts_any_local_address_literal() {
        let o = o("0.0.0.0", &[]);
        assert!(
            o.origin_ok("http://127.0.0.5:8070"),
            "all of 127/8 is local"
        );
        // TEST-NET-3 is never assigned to this machine.
        assert!(!o.origin_ok("http://203.0.113.9:8070"));
        assert!(!o.origin_ok("http://0.0.0.0:8070"));
    }
}
