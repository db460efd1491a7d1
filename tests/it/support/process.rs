//! The `lb` binary as a child process, and what /proc says about a process (RSS, descriptors,
//! CPU time).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{read_listen_addr, PATIENCE};

/// The `lb` binary as a child process, for what only a process shows (RSS, exit codes).
pub struct ProxyProcess {
    pub addr: SocketAddr,
    pub child: Child,
    pub output: mpsc::Receiver<String>,
}

impl ProxyProcess {
    pub fn start(args: &[&str]) -> ProxyProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lb"))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn lb");
        let stderr = child.stderr.take().expect("lb stderr");
        let (addr, output) = read_listen_addr(stderr, "lb");
        ProxyProcess {
            addr,
            child,
            output,
        }
    }

    /// Waits until the log shows a line containing `needle` (lines before it are consumed);
    /// returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(line) = self.output.recv_timeout(Duration::from_millis(50)) {
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!("no log line with {needle:?}");
    }

    /// The admin API's address, from the startup log (call before waiting for later lines).
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("admin API and dashboard on http://");
        line.split("http://")
            .nth(1)
            .and_then(|rest| rest.trim().trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no admin address in {line:?}"))
    }

    /// Waits for the process to exit, at most `within`; returns how it ended.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lb did not exit within {within:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Peak resident set size so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmRSS:")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Open descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// CPU time a process has used so far (user + system), in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let field = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    field(11) + field(12)
}

impl ProxyProcess {
    /// Like [`ProxyProcess::start`], with both listeners on port 0 of `host` (such as
    /// `127.0.0.2`: a loopback address no other test uses, so that no other test's client can
    /// reach them through a port it believes unused), and the child's descriptor limit
    /// (`RLIMIT_NOFILE`, soft and hard) set to `nofile` between fork and exec, when given.
    pub fn start_on(host: &str, args: &[&str], nofile: Option<u64>) -> ProxyProcess {
        use std::os::unix::process::CommandExt;
        let any_port = format!("{host}:0");
        let mut command = Command::new(env!("CARGO_BIN_EXE_lb"));
        command
            .args(["--listen", &any_port, "--admin", &any_port])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            // SAFETY: between fork and exec only async-signal-safe calls are allowed; setrlimit
            // is a plain system call on a value on the stack.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("spawn lb");
        let stderr = child.stderr.take().expect("lb stderr");
        let (addr, output) = read_listen_addr(stderr, "lb");
        ProxyProcess {
            addr,
            child,
            output,
        }
    }
}

/// Raises this process's soft descriptor limit to its hard limit; returns the new soft limit.
/// Children started afterwards inherit it.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write a live rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    limit.rlim_cur
}
