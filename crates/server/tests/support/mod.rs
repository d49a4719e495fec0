//! The real `userstack` binary as a child process on a free loopback port, for the e2e, fuzz
//! and chaos suites. It is killed when dropped, also when a test fails.

#![allow(dead_code, unreachable_pub)] // each suite uses part of it

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_userstack");

#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    env: Vec<(String, String)>,
    log: std::path::PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts the binary with `env` (plus loopback HOST and a free PORT) and waits until it is
    /// healthy. Its stderr goes to `log`.
    pub fn start(env: &[(&str, &str)], log: &std::path::Path) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            log: log.to_owned(),
        };
        server.spawn();
        server
    }

    /// Starts the process again on the same port (after `terminate` or `kill`).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("HOST", "127.0.0.1")
            .env("PORT", self.port.to_string())
            // One listener: every route of the document on PORT (no token: all open), and no
            // admin listener to collide on its default port with another test's server.
            .env("ADMIN_PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the userstack binary");
        self.child = Some(child);
        self.wait_until_healthy(Duration::from_secs(60));
    }

    pub fn wait_until_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let ok = Command::new(BIN)
                .arg("healthcheck")
                .env_clear()
                .env("PORT", self.port.to_string())
                .env("ADMIN_PORT", "0")
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "server did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (`-TERM`, `-KILL`) and waits up to `limit` for the exit.
    pub fn signal_and_wait(&mut self, signal: &str, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the server did not exit within {limit:?} of {signal}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
