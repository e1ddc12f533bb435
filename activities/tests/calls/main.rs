//! The http and openapi activities against a local service.

mod auth;
mod http;
mod mock;
mod openapi;

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_activities::{ErrorType, HttpActivities, HttpConfig};
use baton_engine::{ActivityError, Failure, SecretProvider};
use serde_json::{Value, json};

pub use mock::Mock;

/// Secrets held in the test.
#[derive(Debug, Default)]
pub struct TestSecrets(BTreeMap<String, Value>);

impl SecretProvider for TestSecrets {
    fn get(&self, name: &str) -> Option<Value> {
        self.0.get(name).cloned()
    }
}

pub fn secrets() -> TestSecrets {
    TestSecrets(BTreeMap::from([
        ("api".to_owned(), json!({ "token": mock::API_TOKEN })),
        ("apiKey".to_owned(), json!("key-material-8910")),
        ("petstoreBasic".to_owned(), json!({ "username": "serverless-workflow", "password": "pa55word-secret" })),
        ("oauthClient".to_owned(), json!({ "id": mock::CLIENT_ID, "secret": mock::CLIENT_SECRET })),
    ]))
}

pub async fn setup() -> (Mock, HttpActivities) {
    setup_with(|_| {}).await
}

pub async fn setup_with(adjust: impl FnOnce(&mut HttpConfig)) -> (Mock, HttpActivities) {
    let mock = Mock::start().await;
    let mut config = HttpConfig::new(Arc::new(secrets()));
    adjust(&mut config);
    (mock, HttpActivities::new(config))
}

/// The failure of a call that had to fail.
pub fn failure(result: Result<Value, ActivityError>) -> Failure {
    match result {
        Err(ActivityError::Failed(failure)) => failure,
        other => panic!("expected a failed call, got {other:?}"),
    }
}

/// Asserts the failure's type and status, the DSL's two required fields.
pub fn assert_problem(failure: &Failure, kind: ErrorType, status: u16) {
    assert_eq!(failure.kind, kind.uri(), "{failure:?}");
    let details = failure.details.as_ref().expect("a failure has details");
    assert_eq!(details["type"], kind.uri());
    assert_eq!(details["status"], status, "{failure:?}");
    assert_eq!(details["title"], failure.message.as_str());
    assert!(details["detail"].is_string());
}

#[test]
fn register_adds_both_activities() {
    let mut registry = baton_engine::ActivityRegistry::new();
    baton_activities::register(&mut registry, HttpConfig::default());
    assert!(registry.contains("http"));
    assert!(registry.contains("openapi"));
}
