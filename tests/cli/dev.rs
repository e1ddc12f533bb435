//! `baton dev` as a newcomer runs it: on a new store it seeds the demo organisation and its
//! requests, so that a team leader who signs in at /ui finds their department's tasks; a second
//! start seeds nothing again; `--no-demo` seeds nothing at all.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A `baton dev` in `dir` (with the repository's definitions/), and what it said until it
/// listened.
struct Dev {
    child: Child,
    base: String,
    said: Vec<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dev(dir: &std::path::Path, args: &[&str]) -> Dev {
    let definitions = dir.join("definitions");
    if !definitions.exists() {
        std::os::unix::fs::symlink(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("definitions"), &definitions)
            .expect("links the definitions");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["dev", "--http-addr", "127.0.0.1:0", "--grpc-addr", "off"])
        .args(args)
        .current_dir(dir)
        .env_remove("BATON_CONFIG")
        .env_remove("BATON_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baton dev starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (lines, said) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let Ok(line) = said.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("baton dev did not say where it listens: {}", seen.join("\n"));
        };
        if let Some(rest) = line.strip_prefix("Baton API on ") {
            let base = rest.split("/api/v1").next().unwrap_or(rest).to_owned();
            return Dev { child, base, said: seen };
        }
        seen.push(line);
    }
}

#[tokio::test]
async fn the_demo_is_seeded_once_and_a_team_leader_finds_their_tasks_at_the_ui() {
    let dir = tempfile::tempdir().expect("a folder");
    let first = dev(dir.path(), &[]);
    assert!(
        first.said.iter().any(|l| l.starts_with("Demo: 11 people in 5 departments and 6 requests")),
        "{:?}",
        first.said
    );
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("a client");
    let login =
        client.post(format!("{}/ui/login", first.base)).form(&[("subject", "tom")]).send().await.expect("login");
    let cookie = login.headers()["set-cookie"].to_str().expect("text").split(';').next().expect("a cookie").to_owned();
    let inbox = client.get(format!("{}/ui/inbox", first.base)).header("cookie", &cookie).send().await.expect("inbox");
    let inbox = inbox.text().await.expect("a page");
    assert!(inbox.contains("Forklift safety refresher") && inbox.contains("Welding basics"), "{inbox}");
    assert!(!inbox.contains("Spray booth"), "the paint shop's request is not tom's: {inbox}");

    // The other shipped definitions run too: a certificate waits for the clerk to print it, a
    // late training for the assembly manager, and nothing has faulted.
    let page = |subject: &'static str, path: &'static str| {
        let client = client.clone();
        let base = first.base.clone();
        async move {
            let login =
                client.post(format!("{base}/ui/login")).form(&[("subject", subject)]).send().await.expect("login");
            let cookie =
                login.headers()["set-cookie"].to_str().expect("text").split(';').next().expect("a cookie").to_owned();
            let page = client.get(format!("{base}{path}")).header("cookie", &cookie).send().await.expect("a page");
            page.text().await.expect("a page")
        }
    };
    // The instances run on after the start: their tasks come within moments.
    for (subject, task) in [("clara", "Print certificate BTN-"), ("mia", "Escalation (level 1): Welding basics")] {
        let mut inbox = String::new();
        for _ in 0..100 {
            inbox = page(subject, "/ui/inbox").await;
            if inbox.contains(task) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(inbox.contains(task), "{subject}: {inbox}");
    }
    let faulted = page("admin", "/ui/instances?status=faulted").await;
    assert!(faulted.contains("No instance matches."), "{faulted}");
    let waiting = page("admin", "/ui/instances?definition=training%2Ftest-assignment").await;
    assert!(waiting.contains("forklift-refresher-2027-session-1"), "{waiting}");
    drop(first);

    let again = dev(dir.path(), &[]);
    assert!(!again.said.iter().any(|l| l.starts_with("Demo:")), "seeded once: {:?}", again.said);
    drop(again);

    let bare = tempfile::tempdir().expect("a folder");
    let plain = dev(bare.path(), &["--no-demo"]);
    assert!(!plain.said.iter().any(|l| l.starts_with("Demo:")), "{:?}", plain.said);
    let login =
        client.post(format!("{}/ui/login", plain.base)).form(&[("subject", "tom")]).send().await.expect("login");
    assert_eq!(login.status(), reqwest::StatusCode::UNAUTHORIZED, "nobody called tom without the demo");
}
