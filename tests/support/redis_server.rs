//! A real `redis-server` (Debian's package) for the cluster tests: on a
//! free loopback port, in a temp directory of its own (AOF on, no RDB
//! snapshots), killed and removed on drop; and a cluster of relay nodes
//! on it (`Cluster`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{die_with_parent, Relay};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    password: Option<String>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// With `--requirepass`.
    pub fn start_with(password: Option<&str>) -> RedisServer {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wb-redis-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            super::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = RedisServer {
            child: None,
            port: free_port(),
            dir,
            password: password.map(str::to_string),
        };
        r.launch();
        r
    }

    /// Starts redis-server on `self.port`; blocks until it accepts.
    fn launch(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--loglevel", "notice", "--logfile", ""]);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("redis-server became ready");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Kills it (SIGKILL): what a crash or a lost machine looks like.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory (its AOF).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// One command in RESP, its raw reply (for INFO and the like).
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = Vec::new();
        let mut push = |a: &[&str]| {
            req.extend_from_slice(format!("*{}\r\n", a.len()).as_bytes());
            for x in a {
                req.extend_from_slice(format!("${}\r\n{x}\r\n", x.len()).as_bytes());
            }
        };
        if let Some(p) = &self.password {
            push(&["AUTH", p]);
        }
        push(args);
        push(&["QUIT"]);
        s.write_all(&req).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` relay nodes on one Redis, each with `--node-id n<i>`.
pub struct Cluster {
    pub redis: RedisServer,
    pub nodes: Vec<Relay>,
}

impl Cluster {
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let redis = RedisServer::start();
        let nodes = (0..n).map(|i| node(&redis.url(), i, extra)).collect();
        Cluster { redis, nodes }
    }
}

/// Relay node `i` on `url` (`--node-id n<i>`).
pub fn node(url: &str, i: usize, extra: &[&str]) -> Relay {
    let id = format!("n{i}");
    let mut args = vec!["--cluster", url, "--node-id", &id];
    args.extend_from_slice(extra);
    Relay::start(&args)
}
