//! The document activities on a real folder: a certificate rendered from its template (strict:
//! a missing field fails), kept under its content hash, refused when the draft was changed,
//! signed with the engine's key and verified, archived beside its record; unsafe names refused.
//! The same in an S3 bucket under a prefix (moto's S3 server from PyPI; skipped without it
//! unless `BATON_REQUIRE_SERVICES=1`), and printed to PDF by headless Chromium (likewise).

use std::sync::Arc;

use baton_activities::document::{self, sha256_hex, verify};
use baton_activities::{DocumentConfig, SigningKey};
use baton_engine::ActivityError;
use serde_json::{Value, json};

fn templates() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../definitions/templates")
}

#[derive(Clone, Copy)]
enum Step {
    Render,
    Store,
    Sign,
    Archive,
}
use Step::{Archive, Render, Sign, Store};

async fn call(config: &DocumentConfig, step: Step, input: Value) -> Result<Value, ActivityError> {
    match step {
        Render => document::render(config, &input).await,
        Store => document::store(config, &input).await,
        Sign => document::sign(config, &input),
        Archive => document::archive(config, &input).await,
    }
}

#[tokio::test]
async fn a_certificate_is_rendered_kept_by_its_hash_signed_verified_and_archived() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = Arc::new(SigningKey::load_or_create(&dir.path().join("key.der")).expect("a key"));
    let config = DocumentConfig::local(&dir.path().join("store"), templates(), key.clone()).expect("a store");
    let data = json!({"person": "Olga Peeters", "program": "Forklift safety", "date": "2026-12-04", "score": 86});
    let render = json!({"templateId": "training-certificate", "trackingCode": "BTN-7", "data": data});
    let draft = call(&config, Render, render.clone()).await.expect("rendered");
    let sha256 = draft["sha256"].as_str().expect("a hash").to_owned();
    let html = std::fs::read_to_string(dir.path().join(format!("store/drafts/{sha256}.html"))).expect("the draft");
    assert!(html.contains("Olga Peeters") && html.contains("BTN-7"), "{html}");
    assert_eq!(sha256_hex(html.as_bytes()), sha256, "named by its content");
    assert_eq!(call(&config, Render, render).await.expect("again")["sha256"], sha256.as_str(), "the same draft");

    let missing = json!({"templateId": "training-certificate", "trackingCode": "BTN-8", "data": {"person": "X"}});
    let error = call(&config, Render, missing).await.expect_err("strict: program is missing");
    assert!(matches!(error, ActivityError::NonRetryable(ref m) if m.contains("program")), "{error:?}");
    let unsafe_name = json!({"templateId": "../secrets", "trackingCode": "BTN-9", "data": {}});
    assert!(matches!(call(&config, Render, unsafe_name).await, Err(ActivityError::NonRetryable(_))));

    let keep = json!({"draftId": sha256, "sha256": sha256, "trackingCode": "BTN-7"});
    let stored = call(&config, Store, keep.clone()).await.expect("stored");
    assert_eq!(stored["documentId"], format!("BTN-7/{sha256}"));
    let document = dir.path().join(format!("store/documents/BTN-7/{sha256}.html"));
    assert_eq!(std::fs::read_to_string(&document).expect("kept"), html);

    let signed = call(&config, Sign, json!({"sha256": sha256, "signer": "olga"})).await.expect("signed");
    let signature = signed["signature"].as_str().expect("a signature");
    assert_eq!((signed["algorithm"].clone(), signed["keyId"].clone()), (json!("Ed25519"), json!(key.key_id())));
    assert!(verify(&key.public_key(), &sha256, signature), "the engine's key verifies it");
    let other = "0".repeat(64);
    assert!(!verify(&key.public_key(), &other, signature), "not valid for another document");

    let archived = call(
        &config,
        Archive,
        json!({"sha256": sha256, "trackingCode": "BTN-7", "channel": "digital", "signature": signed}),
    )
    .await
    .expect("archived");
    let record: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(format!("store/archive/BTN-7/{sha256}.json"))).expect("the record"),
    )
    .expect("JSON");
    assert_eq!(
        (record["channel"].clone(), archived["archiveRef"].clone()),
        (json!("digital"), json!(format!("archive/BTN-7/{sha256}")))
    );

    // A draft changed after rendering is refused, not retried.
    std::fs::write(dir.path().join(format!("store/drafts/{sha256}.html")), "<p>forged</p>").expect("tamper");
    let error = call(&config, Store, keep).await.expect_err("refused");
    assert!(matches!(error, ActivityError::NonRetryable(ref m) if m.contains("refused")), "{error:?}");
    // The same key file gives the same key.
    let again = SigningKey::load_or_create(&dir.path().join("key.der")).expect("reloaded");
    assert_eq!(again.public_key(), key.public_key());
}

/// An S3 server for the test: moto's (PyPI `moto[server]`), on a free port, stopped on drop.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn s3_server() -> Option<S3Server> {
    let required = std::env::var("BATON_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!required, "an S3 server is required (BATON_REQUIRE_SERVICES=1): {why}");
        eprintln!("skipped: {why}; install it with `pip install 'moto[server]'` or set BATON_REQUIRE_SERVICES=1");
        None
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let child = std::process::Command::new("python3")
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut server = match child {
        Ok(child) => S3Server { child, endpoint: format!("http://127.0.0.1:{port}") },
        Err(err) => return skip(format!("python3 does not start ({err})")),
    };
    for _ in 0..300 {
        if let Ok(Some(status)) = server.child.try_wait() {
            return skip(format!("moto's S3 server exited at once ({status}): is moto[server] installed?"));
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(server);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    skip("moto's S3 server did not listen within 15 s".into())
}

#[tokio::test]
async fn documents_are_kept_in_an_s3_bucket_under_its_prefix() {
    let Some(server) = s3_server().await else { return };
    let created = reqwest::Client::new().put(format!("{}/baton-documents", server.endpoint)).send().await;
    assert!(created.expect("the bucket").status().is_success());
    let options: std::collections::BTreeMap<String, String> = [
        ("endpoint", server.endpoint.as_str()),
        ("region", "eu-west-1"),
        ("access_key_id", "baton"),
        ("secret_access_key", "baton-secret"),
        ("allow_http", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let key = Arc::new(SigningKey::load_or_create(&dir.path().join("key.der")).expect("a key"));
    let config =
        DocumentConfig::s3("s3://baton-documents/training", &options, templates(), key.clone()).expect("an S3 store");
    let bucket = DocumentConfig::s3("s3://baton-documents", &options, templates(), key).expect("the bucket");

    let data = json!({"person": "Olga Peeters", "program": "Forklift safety", "date": "2026-12-04", "score": 86});
    let draft =
        call(&config, Render, json!({"templateId": "training-certificate", "trackingCode": "BTN-7", "data": data}))
            .await
            .expect("rendered");
    let sha256 = draft["sha256"].as_str().expect("a hash").to_owned();
    let keep = json!({"draftId": sha256, "sha256": sha256, "trackingCode": "BTN-7"});
    call(&config, Store, keep.clone()).await.expect("stored");
    call(&config, Archive, json!({"sha256": sha256, "trackingCode": "BTN-7", "channel": "post"}))
        .await
        .expect("archived");

    use object_store::ObjectStoreExt as _;
    let read = |path: String| {
        let store = Arc::clone(&bucket.store);
        async move { store.get(&path.as_str().into()).await.expect(&path).bytes().await.expect("bytes").to_vec() }
    };
    let document = read(format!("training/documents/BTN-7/{sha256}.html")).await;
    assert_eq!(sha256_hex(&document), sha256, "kept under the prefix, by its content");
    assert!(String::from_utf8_lossy(&document).contains("Olga Peeters"));
    assert_eq!(read(format!("training/archive/BTN-7/{sha256}.html")).await, document);
    let record: Value =
        serde_json::from_slice(&read(format!("training/archive/BTN-7/{sha256}.json")).await).expect("the record");
    assert_eq!(record["channel"], "post");

    // A draft changed in the bucket is refused, as in a folder.
    bucket
        .store
        .put(&format!("training/drafts/{sha256}.html").as_str().into(), "<p>forged</p>".into())
        .await
        .expect("tamper");
    let error = call(&config, Store, keep).await.expect_err("refused");
    assert!(matches!(error, ActivityError::NonRetryable(ref m) if m.contains("refused")), "{error:?}");

    let bad = DocumentConfig::s3("https://bucket", &options, templates(), Arc::clone(&config.key));
    assert!(bad.expect_err("not s3://").contains("s3://<bucket>"));
    let unknown = [("colour".to_owned(), "blue".to_owned())].into_iter().collect();
    let bad = DocumentConfig::s3("s3://b", &unknown, templates(), Arc::clone(&config.key));
    assert!(bad.expect_err("unknown option").contains("`colour` is not an S3 option"));
}

/// Debian's headless Chromium (BATON_CHROMIUM, or `chromium` on the PATH).
fn chromium() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("BATON_CHROMIUM").map(std::path::PathBuf::from).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|dir| dir.join("chromium")).find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            !std::env::var("BATON_REQUIRE_SERVICES").is_ok_and(|v| v == "1"),
            "Chromium is required (BATON_REQUIRE_SERVICES=1) but is not on the PATH"
        );
        eprintln!("skipped: no chromium on the PATH (apt-get install chromium); set BATON_REQUIRE_SERVICES=1 to fail");
    }
    found
}

#[tokio::test]
async fn a_certificate_is_printed_to_pdf_kept_and_archived_by_its_hash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = Arc::new(SigningKey::load_or_create(&dir.path().join("key.der")).expect("a key"));
    let mut config = DocumentConfig::local(&dir.path().join("store"), templates(), key).expect("a store");
    let data = json!({"person": "Olga Peeters", "program": "Forklift safety", "date": "2026-12-04", "score": 86});
    let render = json!({"templateId": "training-certificate", "trackingCode": "BTN-7", "format": "pdf", "data": data});

    let error = call(&config, Render, render.clone()).await.expect_err("no Chromium configured");
    assert!(matches!(error, ActivityError::NonRetryable(ref m) if m.contains("Chromium")), "{error:?}");

    let Some(chromium) = chromium() else { return };
    config.pdf = Some(chromium);
    let draft = call(&config, Render, render).await.expect("printed");
    assert_eq!(draft["mediaType"], "application/pdf");
    let sha256 = draft["sha256"].as_str().expect("a hash").to_owned();
    let pdf = std::fs::read(dir.path().join(format!("store/drafts/{sha256}.pdf"))).expect("the draft");
    assert!(pdf.starts_with(b"%PDF-") && pdf.len() > 1000, "a PDF of {} bytes", pdf.len());
    assert_eq!(sha256_hex(&pdf), sha256, "named by its content");

    let keep = json!({"draftId": sha256, "sha256": sha256, "trackingCode": "BTN-7", "mediaType": "application/pdf"});
    let stored = call(&config, Store, keep).await.expect("stored");
    assert_eq!(stored["uri"], format!("documents/BTN-7/{sha256}.pdf"));
    assert_eq!(std::fs::read(dir.path().join(format!("store/documents/BTN-7/{sha256}.pdf"))).expect("kept"), pdf);
    let archive = json!({"sha256": sha256, "trackingCode": "BTN-7", "mediaType": "application/pdf", "channel": "post"});
    call(&config, Archive, archive).await.expect("archived");
    assert_eq!(std::fs::read(dir.path().join(format!("store/archive/BTN-7/{sha256}.pdf"))).expect("archived"), pdf);
    // Asked for as HTML, the same hash is not there: the media type is part of the name.
    let html = json!({"draftId": sha256, "sha256": sha256, "trackingCode": "BTN-7"});
    assert!(matches!(call(&config, Store, html).await, Err(ActivityError::NonRetryable(_))));
}
