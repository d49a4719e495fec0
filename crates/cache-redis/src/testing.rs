//! A throwaway Redis server for tests (feature `testing`).
//!
//! [`TestRedis::start`] uses `TEST_REDIS_URL` when set; otherwise it runs `redis-server` from
//! `PATH` on a free port with a temporary directory, and stops it on drop. A missing
//! `redis-server` is a test failure that says what to install, never a silent skip.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::RedisSettings;

/// A Redis server owned by a test.
#[derive(Debug)]
pub struct TestRedis {
    url: String,
    password: Option<String>,
    managed: Option<Managed>,
}

#[derive(Debug)]
struct Managed {
    dir: tempfile::TempDir,
    port: u16,
    password: Option<String>,
    child: Mutex<Option<Child>>,
}

impl TestRedis {
    /// The server named by `TEST_REDIS_URL`, or a new private one.
    pub fn start() -> Self {
        match std::env::var("TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => Self {
                url,
                password: None,
                managed: None,
            },
            _ => Self::start_private(),
        }
    }

    /// Always a new private server (for tests that stop and restart it).
    pub fn start_private() -> Self {
        Self::start_managed(None)
    }

    /// A new private server that requires `password` (`requirepass`), with protected mode on:
    /// what the deploy files run.
    pub fn start_with_password(password: &str) -> Self {
        Self::start_managed(Some(password.to_owned()))
    }

    fn start_managed(password: Option<String>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port")
            .port();
        let managed = Managed {
            dir: tempfile::Builder::new()
                .prefix("userstack-redis-")
                .tempdir()
                .expect("create a temporary directory"),
            port,
            password: password.clone(),
            child: Mutex::new(None),
        };
        managed.spawn();
        Self {
            url: format!("redis://127.0.0.1:{port}"),
            password,
            managed: Some(managed),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The password the server requires, if any (never part of [`TestRedis::url`]).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Settings with a key prefix of their own, so tests sharing a server never collide.
    pub fn settings(&self, prefix: &str) -> RedisSettings {
        RedisSettings {
            url: self.url.clone(),
            password: self.password.clone(),
            key_prefix: format!("test:{}:{prefix}:", std::process::id()),
            ..RedisSettings::default()
        }
    }

    /// Kills the server (as a crash or a stopped container would). Its data is lost.
    pub fn stop(&self) {
        self.managed().kill();
    }

    /// Starts a stopped server again on the same port.
    pub fn restart(&self) {
        self.managed().spawn();
    }

    /// Freezes the server (`SIGSTOP`) or thaws it (`SIGCONT`). Frozen, it accepts connections
    /// but answers nothing, and keeps its data: a Redis behind a partition, not a crashed one.
    pub fn pause(&self, paused: bool) {
        self.managed()
            .signal(if paused { "-STOP" } else { "-CONT" });
    }

    /// The server's process id, for programs that measure its CPU (the benchmark); `None` for a
    /// server named by `TEST_REDIS_URL`.
    pub fn pid(&self) -> Option<u32> {
        let child = self.managed.as_ref()?.child.lock().unwrap();
        child.as_ref().map(Child::id)
    }

    fn managed(&self) -> &Managed {
        self.managed
            .as_ref()
            .expect("this test stops Redis, so it needs its own server: unset TEST_REDIS_URL")
    }
}

impl Managed {
    fn spawn(&self) {
        let mut command = Command::new("redis-server");
        if self.password.is_some() {
            // The configuration, with the password, comes on stdin ("-" must be the first
            // argument), as in the deploy files: it never shows in the process list.
            command.arg("-").stdin(Stdio::piped());
        } else {
            command.stdin(Stdio::null());
        }
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        // With a password, protected mode as in production; without one it would refuse
        // nothing on loopback anyway.
        let protected = if self.password.is_some() { "yes" } else { "no" };
        command.args(["--protected-mode", protected]);
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}). Install it (Debian: apt-get install redis-server) or set TEST_REDIS_URL.")
            });
        if let Some(password) = &self.password {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped stdin");
            writeln!(stdin, "requirepass \"{password}\"")
                .expect("write the config to redis-server");
        }
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: &str) {
        let child = self.child.lock().unwrap();
        let pid = child.as_ref().expect("redis-server is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.kill();
    }
}
