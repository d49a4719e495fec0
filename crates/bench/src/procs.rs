//! Processes the benchmark starts, and what `/proc` says about them: CPU time and memory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// A long-running process the benchmark owns (a server, nginx, a Flask app). Stopped with
/// SIGTERM by [`Proc::stop`], and on drop (a failed run) with SIGTERM then SIGKILL, so that
/// nothing outlives the benchmark.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `command` with its output in `log`.
    pub(crate) fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {name} ({command:?})"))?;
        Ok(Self {
            name: name.to_owned(),
            log: log.to_owned(),
            child: Some(child),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).unwrap_or(0)
    }

    /// Fails if the process has exited (it must serve until stopped).
    pub(crate) fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!(
                "{} exited ({status}) during the benchmark; last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 20)
            );
        }
        Ok(())
    }

    /// SIGTERM, then up to 10 s for it to exit, then SIGKILL.
    pub(crate) async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "-TERM");
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // TERM first so that a master process (nginx, gunicorn) takes its workers with it.
            signal(child.id(), "-TERM");
            std::thread::sleep(Duration::from_millis(300));
            let _ = child.start_kill();
        }
    }
}

fn signal(pid: Option<u32>, signal: &str) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A loopback port nothing listens on now.
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `port` accepts TCP connections.
pub(crate) async fn wait_for_port(what: &str, port: u16, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("{what} did not listen on 127.0.0.1:{port} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ: 100 on every Linux we run on; read
/// once from `getconf` so that a kernel built otherwise is measured right).
pub(crate) fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields of `/proc/<pid>/stat` after the command name: `[0]` is the state, `[1]` the parent.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// CPU ticks (user + system) of a process; with `children`, also of its exited, reaped children.
pub(crate) fn ticks(pid: u32, children: bool) -> u64 {
    stat_fields(pid).map_or(0, |f| {
        f[11] + f[12] + if children { f[13] + f[14] } else { 0 }
    })
}

/// CPU ticks of a process tree's root, its live children and the children it reaped: a server
/// with worker processes (PostgreSQL's postmaster and backends, nginx, gunicorn) as one.
pub(crate) fn tree_ticks(root: u32) -> u64 {
    let mut sum = 0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(f) = stat_fields(pid)
                && f[1] == u64::from(root)
            {
                sum += f[11] + f[12];
            }
        }
    }
    // The root last: a child reaped during the scan is then counted (maybe twice: a transient
    // excess) rather than missed, which made a later sample smaller than an earlier one.
    sum + ticks(root, true)
}

/// CPU ticks the whole machine spent busy (user, nice, system, irq, softirq, steal).
pub(crate) fn machine_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum()
}

/// The machine's TCP counters so far: segments sent (`/proc/net/snmp`, `Tcp: OutSegs`),
/// delayed ACKs sent when their timer ran out and handshakes dropped because a listener's
/// accept queue was full (`/proc/net/netstat`, `TcpExt: DelayedACKs`, `ListenOverflows`);
/// `None` where the kernel does not show them. Every segment over loopback is sent once and
/// received once on this machine, so the first counts each segment once.
pub(crate) fn tcp_counters() -> Option<[u64; 3]> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    Some([
        counter_in(&snmp, "Tcp:", "OutSegs")?,
        counter_in(&netstat, "TcpExt:", "DelayedACKs")?,
        counter_in(&netstat, "TcpExt:", "ListenOverflows")?,
    ])
}

/// One counter of a `/proc/net` table's text, where each section is a line of names followed
/// by a line of values, both starting with `section`.
fn counter_in(text: &str, section: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(section));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Resident memory of a process tree in KiB (`VmRSS` of the root plus its live children).
pub(crate) fn tree_rss_kib(root: u32) -> u64 {
    let mut pids = vec![root];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok())
                && stat_fields(pid).is_some_and(|f| f[1] == u64::from(root))
            {
                pids.push(pid);
            }
        }
    }
    pids.into_iter().map(|p| status_kib(p, "VmRSS:")).sum()
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), 0 if absent.
pub(crate) fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::counter_in;

    #[test]
    fn a_net_counter_is_read_under_its_own_name_and_section() {
        let snmp = "Ip: Forwarding InReceives\nIp: 1 900\n\
                    Tcp: RtoAlgorithm InSegs OutSegs\nTcp: 1 970858 970848\n\
                    TcpExt: OutSegs\nTcpExt: 5\n";
        assert_eq!(counter_in(snmp, "Tcp:", "OutSegs"), Some(970_848));
        assert_eq!(counter_in(snmp, "Tcp:", "InSegs"), Some(970_858));
        assert_eq!(counter_in(snmp, "TcpExt:", "OutSegs"), Some(5));
        assert_eq!(counter_in(snmp, "Tcp:", "DelayedACKs"), None);
        assert_eq!(counter_in(snmp, "Udp:", "OutSegs"), None);
    }
}
