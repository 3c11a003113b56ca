//! Prometheus metrics: one process-wide recorder (the `metrics` facade, rendered by
//! `metrics-exporter-prometheus`), exposed at `GET /metrics`.
//!
//! | metric | labels |
//! | --- | --- |
//! | `http_requests_total` | method, route (the pattern, e.g. `/v1/keys/{key_id}`), status |
//! | `http_request_duration_seconds` (histogram) | method, route |
//! | `generations_total` | model, outcome (`succeeded` or the error code) |
//! | `usage_counted_total` | — |
//! | `nanobanana_cost_usd_total` (a float counter, USD) | model |
//! | `upstream_request_duration_seconds` (histogram) | model, outcome |
//! | `upstream_retries_total` | model |
//! | `rate_limited_total` | limit |
//! | `gateway_overhead_seconds` (histogram) | — (a generation's total time less the provider's) |
//! | `gateway_commit_seconds` (histogram) | — (of that overhead, recording the generation and its usage: the durable commit) |
//! | `gateway_overhead_excluding_commit_seconds` (histogram) | — (the rest of the overhead) |

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets from 1 ms to 2 min: gateway overhead at the bottom, image models at the top.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
    120.0,
];

/// Gateway overhead buckets (every `gateway_*` histogram), from 50 µs to 100 ms: the benchmark
/// reads its p50/p99 from these.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00015, 0.0002, 0.0003, 0.0004, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003,
    0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
];

/// The recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Prefix("gateway_".into()), OVERHEAD_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is already installed (possible only in tests): render an empty one.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// The methods that become labels as they are; any other (clients may send any token) is
/// `other`, so `/metrics` stays bounded whatever clients send.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

/// `route` is the matched pattern (bounded by the route table), or `unmatched`.
pub fn record_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let method = method_label(method);
    let labels = [("method", method.to_owned()), ("route", route.to_owned())];
    metrics::counter!("http_requests_total", "method" => method, "route" => route.to_owned(), "status" => status.to_string()).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
}

/// Nano-dollars spent per model since start-up: `nanobanana_cost_usd_total`. The `metrics`
/// facade's counters are integers, and a float counter must be rendered as a counter (not a
/// gauge), so this one is kept exactly here and rendered beside the others.
static COST_BY_MODEL: std::sync::Mutex<std::collections::BTreeMap<String, i64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// What an image made cost.
pub fn record_cost(model: &str, cost: nb_domain::money::Usd) {
    let mut costs = COST_BY_MODEL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let spent = costs.entry(model.to_owned()).or_default();
    *spent = spent.saturating_add(cost.nanos());
}

/// Every metric in Prometheus' text format.
pub fn render() -> String {
    let mut text = handle().render();
    let costs = COST_BY_MODEL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !costs.is_empty() {
        text.push_str(
            "# HELP nanobanana_cost_usd_total What the images made cost, in US dollars.\n\
             # TYPE nanobanana_cost_usd_total counter\n",
        );
        for (model, nanos) in costs.iter() {
            let dollars = nb_domain::money::Usd::from_nanos(*nanos).as_f64();
            let model = model.replace('\\', "\\\\").replace('"', "\\\"");
            text.push_str(&format!(
                "nanobanana_cost_usd_total{{model=\"{model}\"}} {dollars}\n"
            ));
        }
    }
    text
}

pub fn record_generation(model: &str, outcome: &str) {
    metrics::counter!("generations_total", "model" => model.to_owned(), "outcome" => outcome.to_owned()).increment(1);
    if outcome == "succeeded" {
        metrics::counter!("usage_counted_total").increment(1);
    }
}

/// What the gateway added to a generation: its total time less the provider's, and that
/// split into the durable commit (recording the generation and its usage) and the rest.
pub fn record_gateway_overhead(overhead: Duration, commit: Duration) {
    metrics::histogram!("gateway_overhead_seconds").record(overhead.as_secs_f64());
    metrics::histogram!("gateway_commit_seconds").record(commit.as_secs_f64());
    metrics::histogram!("gateway_overhead_excluding_commit_seconds")
        .record(overhead.saturating_sub(commit).as_secs_f64());
}

pub fn record_rate_limited(limit: &'static str) {
    metrics::counter!("rate_limited_total", "limit" => limit).increment(1);
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// Records into a recorder of its own, never the process-wide one other tests fill.
    fn rendered(record: impl FnOnce()) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, record);
        handle.render()
    }

    #[test]
    fn recorded_metrics_are_rendered() {
        let text = rendered(|| {
            super::record_generation("m", "succeeded");
            super::record_generation("m", "content_rejected");
            super::record_request("GET", "/x", 200, std::time::Duration::from_millis(3));
        });
        assert!(
            text.contains(r#"generations_total{model="m",outcome="succeeded"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"generations_total{model="m",outcome="content_rejected"} 1"#),
            "{text}"
        );
        assert!(text.contains("usage_counted_total 1"), "{text}");
        assert!(
            text.contains(r#"http_requests_total{method="GET",route="/x",status="200"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let text = rendered(|| {
            for method in ["FROBNICATE", "AAAAAAAAAAAAAAAAAAAA", "get"] {
                super::record_request(method, "unmatched", 405, std::time::Duration::ZERO);
            }
        });
        assert!(
            text.contains(
                r#"http_requests_total{method="other",route="unmatched",status="405"} 3"#
            ),
            "{text}"
        );
        assert!(!text.contains("FROBNICATE"), "{text}");
    }
}
