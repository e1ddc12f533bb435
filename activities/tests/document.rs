//! The document activities on a real folder: a certificate rendered from its template (strict:
//! a missing field fails), kept under its content hash, refused when the draft was changed,
//! signed with the engine's key and verified, archived beside its record; unsafe names refused.

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
