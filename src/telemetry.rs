//! Logs and metrics.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::cloud_logging::CloudLoggingFormat;
use crate::config::{GlobalArgs, LogFormat};

/// Buckets of every histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Buckets of the histograms that count things (`…_writes`, `…_envelopes`).
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 10_000.0, 100_000.0,
];

/// Installs the log subscriber on stderr: human-readable text, or JSON in the Cloud Logging shape.
pub fn init_logs(global: &GlobalArgs) {
    let filter = EnvFilter::try_new(&global.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match global.log_format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(CloudLoggingFormat::new(global.log_project.clone()))
            .init(),
    }
}

/// Installs the Prometheus recorder and returns its handle for `/metrics`.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_writes".into()), COUNT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_envelopes".into()), COUNT_BUCKETS)?
        .install_recorder()?;
    Ok(handle)
}
