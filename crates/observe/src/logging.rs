//! One log format for the Lambda functions and the CLI.
//!
//! JSON, one object per line: `timestamp`, `level`, `fields.message` and the event's own fields,
//! and `span` with the fields of the document being handled: `trace_id`, `seller_nip`,
//! `document` (seller NIP | kind | number), `erp_doc_id`, `state` and `error_class` (the last
//! three recorded as they become known). Nothing that could hold invoice content or a secret is
//! ever a field: the use cases log identifiers, states, codes and KSeF's messages only.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The span every use case opens around one document. `state`, `erp_doc_id` and
/// `error_class` start empty and are recorded with [`note_state`] and [`note_error_class`].
#[macro_export]
macro_rules! document_span {
    ($name:expr, $key:expr, $trace_id:expr) => {
        tracing::info_span!(
            $name,
            trace_id = %$trace_id,
            seller_nip = %$key.seller_nip,
            document = %$key,
            erp_doc_id = tracing::field::Empty,
            state = tracing::field::Empty,
            error_class = tracing::field::Empty,
        )
    };
}

/// The span a Lambda handler opens around one message before it knows the document: the same
/// fields as [`document_span!`], all empty until [`note_document`] and [`note_state`] fill them.
#[macro_export]
macro_rules! message_span {
    ($name:expr) => {
        tracing::info_span!(
            $name,
            trace_id = tracing::field::Empty,
            seller_nip = tracing::field::Empty,
            document = tracing::field::Empty,
            erp_doc_id = tracing::field::Empty,
            state = tracing::field::Empty,
            error_class = tracing::field::Empty,
        )
    };
}

/// Records which document the current span is about (a no-op outside one).
pub fn note_document(trace_id: &dyn std::fmt::Display, seller_nip: &dyn std::fmt::Display, document: &dyn std::fmt::Display) {
    let span = tracing::Span::current();
    span.record("trace_id", tracing::field::display(trace_id));
    span.record("seller_nip", tracing::field::display(seller_nip));
    span.record("document", tracing::field::display(document));
}

/// Records the document's ERP id and current state on the current span (a no-op outside one).
pub fn note_state(erp_doc_id: &str, state: &str) {
    let span = tracing::Span::current();
    span.record("erp_doc_id", erp_doc_id);
    span.record("state", state);
}

/// Records the error class of the last failure on the current span.
pub fn note_error_class(class: &str) {
    tracing::Span::current().record("error_class", class);
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (Lambda, CloudWatch Logs Insights, `ksef-relay --log-json`).
    Json,
    /// Human-readable lines (the CLI on a terminal).
    Text,
}

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Installs the global subscriber: `RUST_LOG` sets the filter, `default_filter` otherwise.
pub fn init<W>(format: LogFormat, default_filter: &str, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(default_filter))
        .with_writer(writer);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_target(false)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// The Lambda functions: JSON on stdout, `info` unless `RUST_LOG` says otherwise; EMF metric
/// lines on stdout too (CloudWatch Logs extracts them).
pub fn init_lambda() {
    init(LogFormat::Json, "info", std::io::stdout);
    crate::emf::set_sink(Box::new(crate::emf::Stdout));
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Key {
        seller_nip: &'static str,
    }
    impl std::fmt::Display for Key {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}|VAT|FV/1", self.seller_nip)
        }
    }

    #[test]
    fn lines_inside_a_document_span_carry_its_fields() {
        let buf = Buf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let key = Key { seller_nip: "5260250274" };
            let span = document_span!("send", key, "trace-1");
            let _g = span.enter();
            note_state("FV-1", "QUEUED");
            tracing::info!("claimed");
            note_error_class("TRANSIENT");
            note_state("FV-1", "FAILED");
            tracing::warn!("gave up");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        let span = &lines[0]["span"];
        assert_eq!(span["trace_id"], "trace-1");
        assert_eq!(span["seller_nip"], "5260250274");
        assert_eq!(span["document"], "5260250274|VAT|FV/1");
        assert_eq!(span["erp_doc_id"], "FV-1");
        assert_eq!(span["state"], "QUEUED");
        assert_eq!(lines[1]["span"]["state"], "FAILED");
        assert_eq!(lines[1]["span"]["error_class"], "TRANSIENT");
    }
}
