//! Logging and tracing set-up, and the trace context that rides along with an event.
//!
//! Every attempt to deliver an event runs in a `delivery` span that names the event,
//! rule, target and plugin, so the log of one event can be followed with any build;
//! each accepted event also gets a `publish` span naming the rules it matched when
//! the spans go somewhere (`BUSBAR_LOG=debug`, or an exporter). With `--features otlp` and `OTEL_EXPORTER_OTLP_ENDPOINT` set, the
//! spans are also exported over OTLP/HTTP, and they form one trace per event: the
//! publish span's context is written into the event as the CloudEvents distributed
//! tracing extension (`extensions.traceparent`, W3C Trace Context), so it survives
//! the durable queue, a restart and a hop to another node, and each delivery span
//! names it as its parent. Events a plugin publishes carry the context of the
//! delivery that produced them, so a whole choreography is one trace.
//!
//! An event that arrives with a `traceparent` of its own (a CloudEvent from a traced
//! producer) keeps it untouched: the publish span and the deliveries then join the
//! producer's trace as children of the producer's span.

use tracing::Span;

use crate::event::Event;

/// The CloudEvents distributed tracing extension attribute (W3C `traceparent`).
pub const TRACEPARENT: &str = "traceparent";
/// Its companion, vendor-specific trace state (W3C `tracestate`).
pub const TRACESTATE: &str = "tracestate";

/// Installs the log (stderr, `BUSBAR_LOG` filter) and, when built with `otlp` and
/// asked for by the environment, the OTLP exporter.
pub fn init() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_env("BUSBAR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        // The log is diagnostics, so stderr; colour codes only on a terminal.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otlp")]
    let registry = registry.with(otlp::layer());
    registry.init();
}

/// Sends the spans still buffered for export before the process exits.
pub fn shutdown() {
    #[cfg(feature = "otlp")]
    otlp::shutdown();
}

/// Whether spans leave the process: only then is trace context worth computing.
pub fn exporting() -> bool {
    #[cfg(feature = "otlp")]
    {
        otlp::active()
    }
    #[cfg(not(feature = "otlp"))]
    {
        false
    }
}

/// The span of one event being accepted. Its `rules` field is filled in with
/// [`record_rules`] once the event is routed and committed (routing happens once,
/// in `crate::publish`, after the span has stamped the event).
/// While exporting, the event is stamped with the span's context (unless it came
/// with its own), which is how its deliveries find their parent.
pub fn publish_span(event: &mut Event, surface: &str) -> Span {
    // Only built when it goes somewhere (an exporter, or a log at debug level).
    let exporting = exporting();
    if !exporting && !tracing::enabled!(tracing::Level::DEBUG) {
        return Span::none();
    }
    let span = tracing::info_span!("publish", event = %event.id, source = %event.source,
        detail_type = %event.detail_type, bus = %event.bus, surface,
        rules = tracing::field::Empty);
    if exporting {
        adopt_parent(&span, event);
        stamp(event, &span);
    }
    tracing::debug!(parent: &span, "accepted");
    span
}

/// Records on a publish span the rules its event was routed to.
pub fn record_rules(span: &Span, rules: &[std::sync::Arc<str>]) {
    if !span.is_disabled() {
        span.record("rules", rules.join(",").as_str());
    }
}

/// The span of one delivery attempt, a child of the span that published the event.
pub fn delivery_span(event: &Event, rule: &str, target: &str, plugin: &str, attempt: u32) -> Span {
    let span = tracing::info_span!("delivery", event = %event.id, rule, target, plugin, attempt,
        outcome = tracing::field::Empty);
    if exporting() {
        adopt_parent(&span, event);
    }
    span
}

/// Writes the current span's context into an event a plugin produced, unless the
/// plugin set one itself.
pub fn stamp_current(event: &mut Event) {
    if exporting() {
        stamp(event, &Span::current());
    }
}

#[cfg(feature = "otlp")]
fn adopt_parent(span: &Span, event: &Event) {
    otlp::adopt_parent(span, event)
}

#[cfg(not(feature = "otlp"))]
fn adopt_parent(_span: &Span, _event: &Event) {}

#[cfg(feature = "otlp")]
fn stamp(event: &mut Event, span: &Span) {
    otlp::stamp(event, span)
}

#[cfg(not(feature = "otlp"))]
fn stamp(_event: &mut Event, _span: &Span) {}

/// OTLP export of the same spans (`cargo build --features otlp`), switched on by
/// the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (e.g. `http://127.0.0.1:4318`); the
/// other standard `OTEL_*` variables (protocol, headers, batch delay) apply too.
#[cfg(feature = "otlp")]
mod otlp {
    use std::collections::HashMap;
    use std::sync::OnceLock;

    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use serde_json::Value;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::registry::LookupSpan;

    use super::{TRACEPARENT, TRACESTATE};
    use crate::event::Event;

    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    pub fn active() -> bool {
        PROVIDER.get().is_some()
    }

    pub fn layer<S>()
    -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT")?;
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(e) => e,
            Err(e) => {
                eprintln!("busbar: OTLP export is off: {e}");
                return None;
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("busbar")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("busbar");
        let _ = PROVIDER.set(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    pub fn shutdown() {
        if let Some(p) = PROVIDER.get()
            && let Err(e) = p.shutdown()
        {
            eprintln!("busbar: flushing the last spans failed: {e}");
        }
    }

    pub fn adopt_parent(span: &Span, event: &Event) {
        let Some(Value::String(parent)) = event.extensions.get(TRACEPARENT) else {
            return;
        };
        let mut carrier = HashMap::from([(TRACEPARENT.to_string(), parent.clone())]);
        if let Some(Value::String(state)) = event.extensions.get(TRACESTATE) {
            carrier.insert(TRACESTATE.to_string(), state.clone());
        }
        let cx = TraceContextPropagator::new().extract(&carrier);
        // A malformed traceparent extracts to an empty context: the span is then a root.
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }

    pub fn stamp(event: &mut Event, span: &Span) {
        if event.extensions.contains_key(TRACEPARENT) {
            return;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
        for (key, value) in carrier {
            event.extensions.insert(key, Value::String(value));
        }
    }
}
