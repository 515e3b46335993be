//! A real Redis for the fleet tests: each test starts its own `redis-server` on a free loopback
//! port (no persistence) and stops it on drop.
//!
//! The binary: `$ACE_REDIS_SERVER`, else `redis-server` on the PATH, else — when running as
//! root, as CI does — Debian's `redis-server` package, installed once with apt-get (and said
//! so on stderr). Otherwise the test fails and says how to get one.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `redis-server` binary, found or installed once per test process.
pub(crate) fn redis_server_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("ACE_REDIS_SERVER") {
            return PathBuf::from(p);
        }
        if let Some(p) = on_path("redis-server") {
            return p;
        }
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        assert!(
            root,
            "the fleet tests need redis-server: install it (Debian: `apt-get install \
             redis-server`) or set ACE_REDIS_SERVER to its path"
        );
        eprintln!(
            "fleet tests: redis-server is not on the PATH; installing Debian's redis-server \
             package with apt-get (running as root)"
        );
        let ok = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                 redis-server >/dev/null",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "apt-get install redis-server failed");
        on_path("redis-server").expect("redis-server installed but not on the PATH")
    })
    .clone()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A free loopback port (bound, read, released).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// One `redis-server` child on 127.0.0.1; killed on drop.
pub(crate) struct RedisServer {
    port: u16,
    password: Option<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub(crate) fn start() -> Self {
        Self::start_with(None)
    }

    /// The same, with `requirepass`.
    pub(crate) fn start_with(password: Option<&str>) -> Self {
        let mut s = Self {
            port: free_port(),
            password: password.map(str::to_owned),
            child: None,
        };
        s.restart();
        s
    }

    /// `redis://[:password@]127.0.0.1:port`.
    pub(crate) fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    #[allow(dead_code, reason = "not every test binary needs it")]
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL): every key is gone, as after a crash without persistence.
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop)).
    pub(crate) fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let mut cmd = Command::new(redis_server_binary());
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("could not start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pings() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one command (as a RESP array, with the password first if any) and returns the
    /// raw reply's first line, e.g. `+OK` or `:1234`.
    #[allow(dead_code, reason = "not every test binary needs it")]
    pub(crate) fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("redis-server is down");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let encode = |args: &[&str]| {
            let mut out = format!("*{}\r\n", args.len());
            for a in args {
                out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            out
        };
        let mut request = String::new();
        if let Some(p) = &self.password {
            request.push_str(&encode(&["AUTH", p]));
        }
        request.push_str(&encode(args));
        s.write_all(request.as_bytes()).unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        let mut lines = 0;
        let wanted = if self.password.is_some() { 2 } else { 1 };
        while lines < wanted {
            s.read_exact(&mut byte).expect("no reply from redis-server");
            reply.push(byte[0]);
            if reply.ends_with(b"\r\n") {
                lines += 1;
                if lines < wanted {
                    reply.clear();
                }
            }
        }
        String::from_utf8_lossy(&reply).trim_end().to_owned()
    }

    /// True once the server answers (a `-NOAUTH` answer counts: it is up).
    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if n > 0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
