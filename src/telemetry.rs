//! Logs and traces: log lines on stderr (text or JSON), and, when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set, every span (http requests, engine steps, activity attempts) exported over OTLP/gRPC.
//!
//! The exporter reads the standard OpenTelemetry variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`...).
//! Spans are batched and sent in the background; [`Telemetry::shutdown`] flushes what is left.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What must be flushed before the process ends.
#[derive(Debug, Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sets the global subscriber. Runs inside the async runtime: the exporter's connection
    /// is made on it.
    pub fn init(filter: &str, json: bool) -> Self {
        let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn"));
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let logs = if json { logs.json().boxed() } else { logs.boxed() };
        // The log filter (`--log`, RUST_LOG) chooses log lines only; the export takes every
        // span at info and above, and the engine's steps (debug), whatever the terminal shows.
        let logs = logs.with_filter(filter);
        let (traces, export) = match exporter() {
            Ok(Some(provider)) => {
                let tracer = provider.tracer("baton");
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(EnvFilter::new("info,baton_engine=debug"));
                (Some(provider), Some(layer))
            }
            Ok(None) => (None, None),
            Err(error) => {
                eprintln!("warning: no trace export: {error}");
                (None, None)
            }
        };
        tracing_subscriber::registry().with(logs).with(export).init();
        Self { traces }
    }

    /// Sends the spans still buffered.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: the last spans were not exported: {error}");
        }
    }
}

fn exporter() -> anyhow::Result<Option<SdkTracerProvider>> {
    let configured = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()));
    if !configured {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "baton".to_owned()))
        .build();
    Ok(Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build()))
}
