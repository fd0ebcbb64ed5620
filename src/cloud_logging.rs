//! Logs in the Cloud Logging shape: one JSON object per line with `severity` (the stock JSON
//! layer writes `level`, which Cloud Logging ignores), `message`, `time`, the event's fields, and
//! `logging.googleapis.com/trace` from the request span's `trace_id`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events for Cloud Logging; `project` turns trace ids into
/// `projects/<project>/traces/<id>`.
pub struct CloudLoggingFormat {
    project: Option<String>,
}

impl CloudLoggingFormat {
    /// A formatter for traces of `project` (when known).
    pub fn new(project: Option<String>) -> Self {
        Self { project }
    }
}

/// Collects an event's fields as JSON.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

impl<S, N> FormatEvent<S, N> for CloudLoggingFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        let message = fields.remove("message").unwrap_or(Value::from(""));
        let mut line = Map::new();
        line.insert(
            "severity".into(),
            Value::from(severity(event.metadata().level())),
        );
        line.insert("message".into(), message);
        line.insert(
            "time".into(),
            Value::from(humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()),
        );
        line.insert("target".into(), Value::from(event.metadata().target()));
        // The innermost span that carries a trace id (the request span) names the trace.
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                let extensions = span.extensions();
                let Some(formatted) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                let Ok(Value::Object(span_fields)) =
                    serde_json::from_str::<Value>(&formatted.fields)
                else {
                    continue;
                };
                if let Some(Value::String(trace)) = span_fields.get("trace_id") {
                    let value = match &self.project {
                        Some(project) => format!("projects/{project}/traces/{trace}"),
                        None => trace.clone(),
                    };
                    line.insert("logging.googleapis.com/trace".into(), Value::from(value));
                    break;
                }
            }
        }
        for (key, value) in fields {
            line.entry(key).or_insert(value);
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}
