//! A real SMTP server for tests: aiosmtpd (Python), writing every message it accepts into a
//! Maildir. Started per test on a free port and killed when dropped.
//!
//! When the `aiosmtpd` module is missing the test is skipped with a note, unless
//! `BATON_REQUIRE_SERVICES=1`, which makes it fail.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SmtpSink {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

fn required() -> bool {
    std::env::var("BATON_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

impl SmtpSink {
    /// Starts a sink, or returns `None` (after saying why) when aiosmtpd is not installed and
    /// services are not required.
    pub fn start() -> Option<Self> {
        let probe = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !probe.is_ok_and(|status| status.success()) {
            let reason = "the SMTP sink needs python3 with aiosmtpd (python3 -m pip install aiosmtpd)";
            assert!(!required(), "BATON_REQUIRE_SERVICES=1 but {reason}");
            eprintln!("skipped: {reason}");
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary Maildir");
        let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port();
        let maildir = dir.path().join("mail");
        let mut child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!("the SMTP sink exited ({status}): {stderr}");
            }
            assert!(Instant::now() < deadline, "the SMTP sink did not listen on port {port} within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self { child, dir, port })
    }

    fn new_dir(&self) -> PathBuf {
        self.dir.path().join("mail").join("new")
    }

    /// Every message received so far (raw RFC 5322 text), in file-name order.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.new_dir()) else { return Vec::new() };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        paths.iter().map(|p| std::fs::read_to_string(p).expect("a readable message")).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
