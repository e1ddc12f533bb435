//! Built-in activity implementations: http, notify channels, document storage, SQL, AMQP.
//!
//! Implemented so far: the `http` and `openapi` activities of the Serverless Workflow DSL's
//! `call: http` and `call: openapi` tasks ([`http`], [`openapi`]); see docs/activities.md. The
//! `baton.process` activity runs `run: shell` and `run: script` tasks when an administrator
//! enables them ([`process`]). The `baton.notify` activity and its [`Notifier`] send templated
//! notifications in-app, by email, webhook and SMS ([`notify`]; docs/notifications.md), and
//! `baton.directory.*` activities look people up in the directory ([`directory`]).
//! `baton.amqp.publish` publishes to RabbitMQ with publisher confirms ([`amqp`]); `baton.sql`
//! runs the parameterized queries an operator configured ([`sql`]). The training
//! platform's read models are projections of the events its definitions emit ([`read_models`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use baton_activities::{HttpConfig, NoSecrets};
//! use baton_engine::ActivityRegistry;
//!
//! let mut registry = ActivityRegistry::new();
//! baton_activities::register(&mut registry, HttpConfig::new(Arc::new(NoSecrets)));
//! assert!(registry.contains("http") && registry.contains("openapi"));
//! ```

pub mod amqp;
mod auth;
pub mod directory;
pub mod document;
pub mod http;
pub mod notify;
mod oauth2;
pub mod openapi;
mod problem;
pub mod process;
pub mod read_models;
pub mod sql;
mod uri;

pub use amqp::{AMQP_PUBLISH_ACTIVITY, AmqpConfig, AmqpPublisher, register_amqp};
pub use directory::{MANAGER_OF_ACTIVITY, PEOPLE_ACTIVITY, register_directory};
pub use document::{DocumentConfig, SigningKey, register_documents};
pub use http::{HttpActivities, HttpConfig, NoSecrets, register};
pub use notify::{
    NOTIFY_ACTIVITY, Notifier, NotifyConfig, RunReport, SmtpConfig, TemplateError, Templates, WebhookConfig,
    register_notify,
};
pub use problem::ErrorType;
pub use process::{PROCESS_ACTIVITY, ProcessPolicy, register_processes, run_process};
pub use sql::{SQL_ACTIVITY, SqlActivity, SqlConfig, SqlQuery, register_sql};
