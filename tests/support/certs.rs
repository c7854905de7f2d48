//! Test certificates made with the `openssl` CLI, for the TLS and deploy
//! tests: a CA, a server certificate for localhost and 127.0.0.1 signed by
//! it, an unrelated CA, an expired certificate, a stray key, a non-PEM file
//! and the full chain (leaf + CA) in one file.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Certificates for one test, in their own temp dir.
pub struct Certs {
    pub dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    /// A CA, a server certificate for localhost and 127.0.0.1 signed by it
    /// (key type `kind`: "ec", "rsa" or "ed25519"), an unrelated CA, an
    /// expired server certificate and a stray key.
    pub fn new(tag: &str, kind: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("wb-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cert dir");
        let newkey: &[&str] = match kind {
            "rsa" => &["-newkey", "rsa:2048"],
            "ed25519" => &["-newkey", "ed25519"],
            _ => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        };
        let ec: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
        for ca in ["ca", "other-ca"] {
            let key = format!("{ca}.key");
            let pem = format!("{ca}.pem");
            let subj = format!("/CN=workbench test {ca}");
            let mut a = vec![
                "req", "-x509", "-nodes", "-days", "30", "-keyout", &key, "-out", &pem, "-subj",
                &subj,
            ];
            a.splice(2..2, ec.iter().copied());
            openssl(&dir, &a);
        }
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        let mut a = vec![
            "req",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ];
        a.splice(1..1, newkey.iter().copied());
        openssl(&dir, &a);
        let sign = |out: &str, days: &str| {
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    out,
                    "-days",
                    days,
                    "-extfile",
                    "ext.cnf",
                ],
            )
        };
        sign("server.pem", "10");
        // notAfter one day before notBefore (now): expired from the start.
        sign("expired.pem", "-1");
        let mut a = vec![
            "req",
            "-nodes",
            "-keyout",
            "stray.key",
            "-out",
            "stray.csr",
            "-subj",
            "/CN=stray",
        ];
        a.splice(1..1, ec.iter().copied());
        openssl(&dir, &a);
        std::fs::write(dir.join("junk.pem"), "this is not PEM\n").expect("junk");
        // A full chain (leaf, then its issuer), as a deployment would mount.
        let mut full = std::fs::read(dir.join("server.pem")).expect("server.pem");
        full.extend(std::fs::read(dir.join("ca.pem")).expect("ca.pem"));
        std::fs::write(dir.join("fullchain.pem"), full).expect("fullchain");
        Certs { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
