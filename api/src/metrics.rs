//! Prometheus metrics at `/metrics`: the engine's counters, what waits in its queues, and the
//! API's requests by route.
//!
//! Written here rather than with `metrics-exporter-prometheus`: that exporter installs one
//! recorder for the whole process, and Baton is embedded as a library, with several engines and
//! servers in one process (tests do it all the time). The text format is small and stable.
//! Labels are bounded: route templates, methods and status codes, never instance ids.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use baton_engine::store::{DeliveryQuery, DeliveryStatus};
use std::sync::Arc;

use crate::app::App;

/// Upper bounds of the request duration histogram, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Queues are counted up to this many rows at each scrape.
const COUNT_BOUND: u32 = 10_000;

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The API's request metrics.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// (route, method, status) → requests.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// (route, method) → durations.
    durations: Mutex<BTreeMap<(String, String), Histogram>>,
}

impl HttpMetrics {
    fn observe(&self, route: String, method: String, status: u16, seconds: f64) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry((route.clone(), method.clone(), status)).or_default() += 1;
        drop(requests);
        let mut durations = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        let histogram = durations.entry((route, method)).or_default();
        for (bucket, bound) in histogram.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }
}

/// Counts a request and its duration under its route template.
pub async fn track(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    app.http_metrics.observe(route, method, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The metrics in the Prometheus text format (version 0.0.4).
pub async fn render(app: &App) -> String {
    let mut out = String::new();
    let stats = app.engine.stats();
    let counters: [(&str, u64, &str); 10] = [
        ("baton_engine_commits_total", stats.commits, "Group commits of the engine."),
        ("baton_engine_steps_total", stats.steps, "Instance steps taken (one input and what it led to)."),
        ("baton_engine_history_events_total", stats.events, "History events written."),
        ("baton_engine_activity_completions_total", stats.activity_completions, "Activity attempts finished."),
        ("baton_engine_timers_fired_total", stats.timers_fired, "Timers fired."),
        ("baton_engine_stale_completions_total", stats.stale_completions, "Activity results dropped as stale."),
        ("baton_engine_incidents_total", stats.incidents, "Incidents raised."),
        ("baton_engine_replays_total", stats.replays, "Instances rebuilt from their history."),
        ("baton_sla_breaches_total", stats.sla_breaches, "SLA clocks that passed their target."),
        ("baton_task_actions_total", stats.task_actions, "Actions on human tasks recorded."),
    ];
    for (name, value, help) in counters {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    queues(app, &mut out).await;
    http(app, &mut out);
    out
}

/// What waits: due timers and their lag, ready activity tasks, open incidents, failed
/// notifications. A store error leaves a gauge out rather than failing the scrape.
async fn queues(app: &App, out: &mut String) {
    let store = app.engine.store();
    let now = app.engine.clock().now();
    if let Ok(due) = store.timers_due_before(now, COUNT_BOUND).await {
        let lag = due.iter().map(|t| (now - t.due_at).num_milliseconds()).max().unwrap_or(0).max(0);
        header(out, "baton_timers_due", "gauge", "Timers due and not yet fired (counted up to 10000).");
        let _ = writeln!(out, "baton_timers_due {}", due.len());
        header(out, "baton_timer_lag_seconds", "gauge", "How late the most overdue timer is.");
        let _ = writeln!(out, "baton_timer_lag_seconds {}", lag as f64 / 1000.0);
    }
    if let Ok(tasks) = store.open_tasks(COUNT_BOUND).await {
        let parked = tasks.iter().filter(|t| t.parked).count();
        header(out, "baton_activity_tasks", "gauge", "Open activity tasks, by state (counted up to 10000).");
        let _ = writeln!(out, "baton_activity_tasks{{state=\"open\"}} {}", tasks.len() - parked);
        let _ = writeln!(out, "baton_activity_tasks{{state=\"parked\"}} {parked}");
    }
    if let Some(remote) = &app.options.remote_workers {
        header(out, "baton_remote_activity_tasks", "gauge", "Attempts for remote workers, by activity and state.");
        for depth in remote.depth() {
            let activity = escape(&depth.activity);
            let _ = writeln!(
                out,
                "baton_remote_activity_tasks{{activity=\"{activity}\",state=\"waiting\"}} {}",
                depth.waiting
            );
            let _ =
                writeln!(out, "baton_remote_activity_tasks{{activity=\"{activity}\",state=\"held\"}} {}", depth.held);
        }
    }
    if let Ok(incidents) = store.incidents(None, true).await {
        header(out, "baton_incidents_open", "gauge", "Incidents waiting for someone.");
        let _ = writeln!(out, "baton_incidents_open {}", incidents.len());
    }
    let failed =
        DeliveryQuery { status: Some(DeliveryStatus::Failed), limit: DeliveryQuery::MAX_LIMIT, ..Default::default() };
    if let Ok(rows) = store.deliveries(&failed).await {
        header(
            out,
            "baton_notification_failures",
            "gauge",
            "Notification deliveries that gave up (counted up to 1000).",
        );
        let _ = writeln!(out, "baton_notification_failures {}", rows.len());
    }
}

fn http(app: &App, out: &mut String) {
    let requests = app.http_metrics.requests.lock().unwrap_or_else(|e| e.into_inner());
    header(out, "baton_http_requests_total", "counter", "HTTP requests answered, by route, method and status.");
    for ((route, method, status), count) in requests.iter() {
        let _ = writeln!(
            out,
            "baton_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {count}",
            escape(route)
        );
    }
    drop(requests);
    let durations = app.http_metrics.durations.lock().unwrap_or_else(|e| e.into_inner());
    header(out, "baton_http_request_duration_seconds", "histogram", "Time to answer HTTP requests.");
    for ((route, method), histogram) in durations.iter() {
        let labels = format!("route=\"{}\",method=\"{method}\"", escape(route));
        for (bound, count) in BUCKETS.iter().zip(histogram.buckets) {
            let _ = writeln!(out, "baton_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "baton_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", histogram.count);
        let _ = writeln!(out, "baton_http_request_duration_seconds_sum{{{labels}}} {}", histogram.sum);
        let _ = writeln!(out, "baton_http_request_duration_seconds_count{{{labels}}} {}", histogram.count);
    }
}
