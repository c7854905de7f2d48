//! Thin, safe wrappers over the few POSIX calls std has no API for: signal
//! waiting, detaching a child into its own session, probing pids, LAN address
//! discovery without sending packets, socket liveness options, and the
//! relay writer's epoll set, eventfd and non-blocking vectored send.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc;

fn shutdown_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks SIGINT/SIGTERM/SIGHUP in this thread (and every thread spawned
/// after), and returns a channel that yields the signal number when one
/// arrives. Call it first thing in `main` of a long-running command, before
/// any other thread exists, so no thread is left to take the default action.
pub fn shutdown_signals() -> mpsc::Receiver<i32> {
    let set = shutdown_set();
    // SAFETY: valid sigset; we only change this thread's mask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait blocks until one of the blocked signals is pending.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 && tx.send(sig).is_err() {
                return;
            }
        })
        .expect("spawn signal thread");
    rx
}

/// Makes `cmd` start in a new session (so a SIGTERM sent to the parent's
/// process group does not reach it) with the default signal mask.
pub fn detach(cmd: &mut Command) -> &mut Command {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let set = shutdown_set();
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Lets children spawned from a thread with blocked signals get them back.
pub fn unblock_signals_in_child(cmd: &mut Command) -> &mut Command {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let set = shutdown_set();
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(())
        })
    }
}

/// True when a process with this pid exists (even if owned by another user).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) -> io::Result<()> {
    if pid == 0 || pid > i32::MAX as u32 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad pid"));
    }
    // SAFETY: plain kill(2).
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The command line of a running process (from /proc), for telling our own
/// servers from an unrelated program that reused a pid.
pub fn process_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// The interface name carrying the default IPv4 route, read from
/// /proc/net/route (no packet is sent).
fn default_route_iface() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|l| {
        let mut f = l.split_whitespace();
        let iface = f.next()?;
        let dest = f.next()?;
        (dest == "00000000").then(|| iface.to_string())
    })
}

/// The machine's LAN IPv4 address: the address of the default-route
/// interface if there is one, else the first up, non-loopback IPv4 address.
/// Found with getifaddrs(3); nothing is sent on the network.
pub fn lan_ipv4() -> Option<Ipv4Addr> {
    let preferred = default_route_iface();
    let mut first: Option<Ipv4Addr> = None;
    let mut chosen: Option<Ipv4Addr> = None;
    // SAFETY: getifaddrs allocates a list we walk read-only and free once.
    unsafe {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut head) != 0 {
            return None;
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || (*ifa.ifa_addr).sa_family as i32 != libc::AF_INET {
                continue;
            }
            let flags = ifa.ifa_flags as i32;
            if flags & libc::IFF_UP == 0 || flags & libc::IFF_LOOPBACK != 0 {
                continue;
            }
            let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            if first.is_none() {
                first = Some(ip);
            }
            if chosen.is_none() && preferred.as_deref() == Some(&*name) {
                chosen = Some(ip);
            }
        }
        libc::freeifaddrs(head);
    }
    chosen.or(first)
}

/// Liveness options set on a listening socket; Linux copies them to every
/// accepted connection. A peer that vanishes without a FIN is dropped once
/// sent data (our pings) stays unacknowledged for `user_timeout_ms`, and a
/// peer that stops reading cannot block a writer longer than `send_timeout_s`.
pub fn tune_listener(fd: std::os::fd::RawFd, user_timeout_ms: u32, send_timeout_s: u32) {
    fn set<T>(fd: i32, level: i32, name: i32, v: T) {
        // SAFETY: v lives for the call; size matches its type.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &v as *const T as *const libc::c_void,
                std::mem::size_of::<T>() as libc::socklen_t,
            );
        }
    }
    // Pushes are latency-sensitive small writes: never wait for Nagle.
    set(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1 as libc::c_int);
    set(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1 as libc::c_int);
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10 as libc::c_int);
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 5 as libc::c_int);
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3 as libc::c_int);
    set(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        user_timeout_ms as libc::c_uint,
    );
    let tv = libc::timeval {
        tv_sec: send_timeout_s as libc::time_t,
        tv_usec: 0,
    };
    set(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, tv);
}

/// A counter the kernel can wait on (eventfd(2)): one thread `notify`s,
/// another sleeps in an [`Epoll`] set until it is readable, then `reset`s
/// it. Non-blocking, so `reset` on an unsignalled counter just returns.
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: no memory arguments; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the counter readable (wakes a waiter).
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. It can only fail if the
        // counter is about to overflow, which leaves it readable anyway.
        unsafe {
            libc::write(
                self.0.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
    }

    /// Resets the counter to zero (not readable).
    pub fn reset(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN (already zero) is fine.
        unsafe {
            libc::read(
                self.0.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            )
        };
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// What an [`Epoll`] set waits for on one descriptor (level-triggered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Readable,
    Writable,
}

/// An epoll(7) set: descriptors registered under a caller's `u64` token;
/// `wait` blocks until some are ready and yields their tokens. The caller
/// keeps each registered descriptor open until it is deleted (a closed
/// descriptor leaves the set by itself).
pub struct Epoll(OwnedFd);

/// Room for the events one [`Epoll::wait`] returns.
pub struct EpollEvents(Vec<libc::epoll_event>);

impl EpollEvents {
    pub fn with_capacity(n: usize) -> EpollEvents {
        EpollEvents(vec![libc::epoll_event { events: 0, u64: 0 }; n.max(1)])
    }
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: no memory arguments; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn add(&self, fd: BorrowedFd<'_>, interest: Interest, token: u64) -> io::Result<()> {
        let events = match interest {
            Interest::Readable => libc::EPOLLIN,
            Interest::Writable => libc::EPOLLOUT,
        } as u32;
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    fn ctl(&self, op: i32, fd: BorrowedFd<'_>, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` lives for the call and the kernel copies it; both
        // descriptors are open (borrowed or owned).
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Blocks until at least one registered descriptor is ready or
    /// `timeout` passes (`None`: no limit), retrying on EINTR; returns the
    /// ready tokens (empty on timeout).
    pub fn wait<'e>(
        &self,
        events: &'e mut EpollEvents,
        timeout: Option<std::time::Duration>,
    ) -> io::Result<impl Iterator<Item = u64> + 'e> {
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        let cap = events.0.len().min(i32::MAX as usize) as i32;
        let n = loop {
            // SAFETY: the buffer outlives the call and holds `cap` events.
            let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.0.as_mut_ptr(), cap, ms) };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        // Copy the token out by value: the struct is packed on x86_64.
        Ok(events.0[..n].iter().map(|ev| ev.u64))
    }
}

/// One vectored write that never blocks, on a socket that may itself be
/// blocking (its reader blocks on it): `MSG_DONTWAIT` makes only this call
/// non-blocking, and `MSG_NOSIGNAL` turns a reset peer into an error
/// instead of SIGPIPE. Returns the bytes taken (possibly fewer than
/// offered); `WouldBlock` when the kernel buffer is full.
pub fn send_vectored_nonblocking(
    sock: BorrowedFd<'_>,
    bufs: &[io::IoSlice<'_>],
) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid (no address, no control data). It
    // points at `bufs`, and `IoSlice` is ABI-compatible with `iovec` on
    // Unix (std's documented guarantee); the kernel only reads them.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len() as _;
        libc::sendmsg(
            sock.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// True when nothing is waiting to be read on `sock` and the peer has not
/// closed it: one `recv(MSG_PEEK | MSG_DONTWAIT)`, so a blocking socket
/// stays blocking (no `O_NONBLOCK` toggling around the peek).
pub fn nothing_to_read(sock: BorrowedFd<'_>) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: `b` is a valid, writable one-byte buffer for the whole call.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            b.as_mut_ptr() as *mut libc::c_void,
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// An exclusive advisory lock on `path` (created if missing), held until the
/// returned file is dropped or the process exits. Fails at once if another
/// process holds it.
pub fn try_lock_file(path: &std::path::Path) -> io::Result<std::fs::File> {
    lock_file(path, false)
}

/// Like `try_lock_file`, but waits for the lock.
pub fn lock_file_blocking(path: &std::path::Path) -> io::Result<std::fs::File> {
    lock_file(path, true)
}

fn lock_file(path: &std::path::Path, wait: bool) -> io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(f)
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "locked by another process",
            ))
        } else {
            Err(e)
        }
    }
}

/// Waits until a process (not necessarily our child) exits, up to `limit`.
/// Uses a pidfd, so it blocks in poll(2) instead of spinning. True if gone.
pub fn wait_pid_exit(pid: u32, limit: std::time::Duration) -> bool {
    if !pid_alive(pid) {
        return true;
    }
    // SAFETY: pidfd_open has no memory arguments; the fd is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
    if fd < 0 {
        return !pid_alive(pid);
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, limit.as_millis().min(i32::MAX as u128) as i32) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    r > 0 || !pid_alive(pid)
}

/// The glibc tunable `reexec_without_thread_caches` sets.
const NO_TCACHE: &str = "glibc.malloc.tcache_count=0";

/// Re-executes this program (same pid, arguments and environment) with
/// glibc's per-thread malloc caches turned off, unless the environment
/// already names a tcache tunable (so the second start, or an operator's
/// own choice, runs on). Tunables are read only at exec, hence the
/// re-exec. Why: a program with thousands of threads that each allocate
/// a little (the relay's readers) keeps up to 7 freed chunks per size
/// class in every thread's cache, ~2.7 KiB per idle relay connection
/// (BENCHMARKS.md). Returns only if it did not re-exec; an exec failure is
/// logged by the caller and harmless.
pub fn reexec_without_thread_caches() -> io::Result<()> {
    let current = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    if current.to_string_lossy().contains("glibc.malloc.tcache") {
        return Ok(());
    }
    let mut tunables = current;
    if !tunables.is_empty() {
        tunables.push(":");
    }
    tunables.push(NO_TCACHE);
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    let err = Command::new(std::env::current_exe()?)
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .exec();
    Err(err)
}

/// Gives the calling thread's unused stack pages back to the kernel: every
/// page below the current frame (less a margin for this call) that a deeper
/// call touched earlier. A thread that once ran something deep (the
/// WebSocket handshake) and then blocks shallow for hours would otherwise
/// keep those pages resident for its whole life. Nothing below the current
/// frame is live, so dropping (zero-filling on next touch) is safe.
/// It frees only what lies below the caller's frame: the caller must keep
/// its deep work in never-inlined callees (the relay's rule, written down
/// at `relay::conn::serve` and guarded by tests/relay_idle_rss.rs).
#[inline(never)]
pub fn trim_stack() {
    // Room for this frame and the madvise call below it (a few hundred
    // bytes); the range is then rounded down to a page boundary.
    const MARGIN: usize = 2048;
    let marker = 0u8;
    let sp = std::hint::black_box(&marker) as *const u8 as usize;
    // SAFETY: `attr` is initialised by pthread_getattr_np before use and
    // destroyed after; the madvise range lies inside this thread's stack
    // mapping, below every live frame of this thread (signals are blocked
    // in relay threads, so no handler frame can be there either).
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        let page = match libc::sysconf(libc::_SC_PAGESIZE) {
            n if n > 0 => n as usize,
            _ => 4096,
        };
        let lo = (addr as usize).div_ceil(page) * page;
        let hi = sp.saturating_sub(MARGIN) & !(page - 1);
        if ok && hi > lo && sp < addr as usize + size {
            libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_DONTNEED);
        }
    }
}

/// Wakes a thread when a file is written, truncated, replaced or removed
/// (inotify(7)), so a server can keep a record on disk without polling it.
/// Each `watch` follows the file now at that path; call it again after the
/// file was replaced. Reading is plain `read(2)` on the inotify descriptor.
pub struct FileWatch {
    fd: std::fs::File,
}

impl FileWatch {
    pub fn new() -> io::Result<FileWatch> {
        use std::os::fd::FromRawFd;
        // SAFETY: no pointer arguments; a new descriptor is returned or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(FileWatch {
            fd: unsafe { std::fs::File::from_raw_fd(fd) },
        })
    }

    /// Watches the file now at `path` (an error if there is none).
    pub fn watch(&self, path: &std::path::Path) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        let mask = libc::IN_MODIFY
            | libc::IN_CLOSE_WRITE
            | libc::IN_ATTRIB
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF;
        // SAFETY: a valid descriptor and a NUL-terminated path that outlives the call.
        if unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Blocks until at least one watched file changed (the events are
    /// read and dropped: the caller looks at the file itself).
    pub fn wait(&self) -> io::Result<()> {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        loop {
            match (&self.fd).read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Blocks until the peer of socket `sock` hangs up (POLLRDHUP: it closed or
/// reset, even with unread bytes pending) or `wake` becomes readable or
/// closes. True when it was the peer. Data arriving on `sock` (a client's
/// next request) does not wake it. Lets a server notice a client that
/// left mid-call without reading from or writing to its socket.
pub fn wait_hangup(sock: std::os::fd::RawFd, wake: std::os::fd::RawFd) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: sock,
            events: libc::POLLRDHUP,
            revents: 0,
        },
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: two valid pollfd structs; poll writes only their revents.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n < 0 || fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            return true;
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit and
/// returns the soft limit now in force (what the page server sizes its
/// connection cap from). The hard limit is the ceiling an administrator set
/// (or a test, with `prlimit`); it is never exceeded.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid, writable rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: raised is a valid rlimit; only this process changes.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

/// A TCP connection to `remote` from the local address `local` (port chosen
/// by the kernel). std cannot bind before connecting; the page server's
/// tests and `workbench soak-client` use it to speak from 127.0.0.2,
/// 127.0.0.3, … (all loopback on Linux), so per-address limits can be seen.
pub fn connect_from(
    local: std::net::Ipv4Addr,
    remote: std::net::SocketAddrV4,
) -> io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    fn sockaddr(a: std::net::SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    // SAFETY: plain socket call; the descriptor is owned by the TcpStream
    // below (or closed on every error path).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own; from here on it is closed on drop.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let from = sockaddr(std::net::SocketAddrV4::new(local, 0));
    // SAFETY: from is a valid sockaddr_in of the given length.
    if unsafe { libc::bind(fd, &from as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let to = sockaddr(remote);
    // SAFETY: to is a valid sockaddr_in of the given length.
    if unsafe { libc::connect(fd, &to as *const _ as *const libc::sockaddr, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// Makes glibc serve every allocation of 256 KiB or more with its own
/// mmap and unmap it when freed. By default the threshold grows after the
/// first big free (up to 32 MiB), after which multi-MiB push buffers are
/// carved from per-thread heaps that are never given back: a page server
/// that handled a few big pushes on many threads keeps their peak as RSS.
pub fn return_big_allocations_to_the_os() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before threads
    // that allocate big buffers exist, and it is thread-safe anyway.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    #[test]
    fn an_eventfd_wakes_its_epoll_set_until_reset() {
        let ep = Epoll::new().expect("epoll");
        let ev = EventFd::new().expect("eventfd");
        ep.add(ev.as_fd(), Interest::Readable, 7).expect("add");
        let mut events = EpollEvents::with_capacity(4);
        let zero = Some(Duration::ZERO);
        assert_eq!(ep.wait(&mut events, zero).expect("wait").count(), 0);
        ev.notify();
        ev.notify();
        let got: Vec<u64> = ep.wait(&mut events, zero).expect("wait").collect();
        assert_eq!(got, vec![7]);
        ev.reset();
        assert_eq!(ep.wait(&mut events, zero).expect("wait").count(), 0);
        ep.delete(ev.as_fd()).expect("delete");
        ev.notify();
        assert_eq!(ep.wait(&mut events, zero).expect("wait").count(), 0);
    }

    #[test]
    fn a_vectored_send_writes_every_slice_and_never_blocks() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut c = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        let parts = [io::IoSlice::new(b"one "), io::IoSlice::new(b"two")];
        assert_eq!(
            send_vectored_nonblocking(s.as_fd(), &parts).expect("send"),
            7
        );
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"one two");
        // Nobody reads: the kernel buffers fill and the call says so
        // instead of blocking.
        let big = vec![0u8; 1 << 20];
        let mut blocked = false;
        for _ in 0..1000 {
            match send_vectored_nonblocking(s.as_fd(), &[io::IoSlice::new(&big)]) {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    blocked = true;
                    break;
                }
            }
        }
        assert!(blocked, "a full socket reports WouldBlock");
        // The peer closes with unread data, so it resets the connection;
        // epoll reports the error (EPOLLERR is always reported). Then a
        // send is an error, not SIGPIPE.
        drop(c);
        let ep = Epoll::new().expect("epoll");
        ep.add(s.as_fd(), Interest::Writable, 1).expect("add");
        let mut events = EpollEvents::with_capacity(1);
        let ready: Vec<u64> = ep
            .wait(&mut events, Some(Duration::from_secs(10)))
            .expect("wait")
            .collect();
        assert_eq!(ready, vec![1], "the reset is reported");
        let e = send_vectored_nonblocking(s.as_fd(), &[io::IoSlice::new(b"x")])
            .expect_err("a reset peer is an error");
        assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
    }
}
