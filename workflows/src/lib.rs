//! The Serverless Workflow DSL as Baton runs it: parsing with source spans, validation against
//! Baton's schema and semantic rules, jq runtime expressions, and the deterministic interpreter
//! that runs a definition as an [`baton_engine::Orchestration`].

pub mod dashboard;
pub mod diagnostic;
pub mod diagram;
pub mod duration;
pub mod expr;
pub mod interp;
pub mod model;
pub mod parse;
pub mod problem;
pub mod run;
pub mod schedule;
pub mod validate;
