//! Traces, shared by every binary: OpenTelemetry spans exported as OTLP over HTTP/protobuf, off
//! unless an endpoint is configured, and the W3C `traceparent` text that carries a span's
//! context from one process to the next.
//!
//! One trace follows an event: the service commits its outbox row with a `traceparent`, which
//! the relay copies into the Kafka header as written; the worker continues it with a `process`
//! span per delivery attempt (retries and dead-lettering are its events) and sends that span's
//! `traceparent` with the HTTP request, so the service's handler is the next child. The relay
//! records one `send` span per batch it publishes, linked to each record's `traceparent` (a
//! batch sender's span in OpenTelemetry's messaging conventions). The operator starts one span
//! per reconcile.
//!
//! Off (the default) is a `OnceLock` read per would-be span and nothing else: [`start`]
//! returns `None` and callers keep the `traceparent` they had. On, the standard `OTEL_*`
//! variables are honoured by the SDK and the exporter themselves (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,HEADERS,TIMEOUT,COMPRESSION}`).

use std::{borrow::Cow, sync::OnceLock};

use clap::Args;
use opentelemetry::{
    Context,
    trace::{
        Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags,
        TraceId, TraceState, Tracer as _, TracerProvider as _,
    },
};
pub use opentelemetry::{KeyValue, trace::SpanKind as Kind};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider},
};

/// The standard variable that turns tracing on for every signal.
const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard variable that turns tracing on for traces only (used as is, path included).
const OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The path OTLP/HTTP receivers take traces on (OTLP specification, "OTLP/HTTP Request").
const TRACES_PATH: &str = "/v1/traces";
/// The standard variable that limits links per span (the SDK reads it itself).
const LINK_COUNT_LIMIT: &str = "OTEL_SPAN_LINK_COUNT_LIMIT";
/// Links a [`Spans::Linked`] span may carry unless [`LINK_COUNT_LIMIT`] says otherwise: the
/// relay's largest chunk (half its largest `--batch-size`), one link per record, where the
/// SDK's default (128) would drop most of a chunk's.
const MAX_LINKS: u32 = 5_000;
/// Spans of [`Spans::Linked`] waiting for export, unless `OTEL_BSP_MAX_QUEUE_SIZE` says
/// otherwise. One per chunk: the exporter takes them 16 at a time far faster than a relay
/// fills chunks, and a collector too slow for 64 loses relay spans (linked to, never parents
/// of, the worker's) rather than relay memory; the SDK's 2,048 held tens of MiB of links.
const LINKED_QUEUE: usize = 64;
/// Spans of [`Spans::Linked`] per export request, unless `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` says
/// otherwise: the SDK's 512 spans of 500 links each made one request tens of MiB, in memory
/// and on the wire (`bench/README.md`, "Tracing cost").
const LINKED_EXPORT_BATCH: usize = 16;

/// What a process's spans look like, which sizes their export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spans {
    /// Many small spans (one per delivery attempt, per reconcile): the SDK's batching.
    Small,
    /// Few spans, each linked to up to a chunk of records (the relay's batch spans): a short
    /// queue, small export requests, and room for a chunk's links.
    Linked,
}

/// The tracer, once [`TraceArgs::init`] found an endpoint; unset means tracing is off.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Errors setting tracing up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OTLP exporter could not be built (e.g. an endpoint that is not a URL).
    #[error("cannot build the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Tracing flags every binary flattens into its command line.
#[derive(Debug, Clone, Default, Args)]
pub struct TraceArgs {
    /// Send traces as OTLP/HTTP (protobuf) to this base URL (`/v1/traces` is appended), e.g.
    /// `http://otel-collector:4318`. Without it, tracing is on only when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
    #[arg(long = "otlp-endpoint")]
    pub otlp_endpoint: Option<String>,
}

/// What [`TraceArgs::init`] decided, read from the flag and the environment (pure, so tested).
#[derive(Debug, PartialEq, Eq)]
enum Setting {
    Off,
    /// On, to the endpoint the exporter finds in the environment.
    FromEnv,
    /// On, to this traces URL.
    To(String),
}

fn setting(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Setting {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    // OTEL_SDK_DISABLED and OTEL_TRACES_EXPORTER=none turn the SDK off (OTel "SDK
    // Environment Variables").
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none");
    match flag.map(str::trim).filter(|f| !f.is_empty()) {
        _ if disabled => Setting::Off,
        Some(base) => Setting::To(format!("{}{TRACES_PATH}", base.trim_end_matches('/'))),
        None if set(OTLP_ENDPOINT) || set(OTLP_TRACES_ENDPOINT) => Setting::FromEnv,
        None => Setting::Off,
    }
}

/// Whether the resource the environment describes already names the service.
fn names_service(env: impl Fn(&str) -> Option<String>) -> bool {
    env("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        })
}

/// Flushes and stops the exporter when dropped (at the end of `run`), so the last spans are
/// sent; does nothing when tracing is off.
#[must_use = "dropping it stops the exporter"]
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "could not flush the last spans");
        }
    }
}

impl TraceArgs {
    /// Turns tracing on for this process if an endpoint is configured; `service` is the
    /// `service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names one.
    /// Call once, at start-up, after logging is set up; a second call keeps the first tracer.
    pub fn init(&self, service: &'static str, spans: Spans) -> Result<Tracing, Error> {
        let env = |name: &str| std::env::var(name).ok();
        let endpoint = match setting(self.otlp_endpoint.as_deref(), env) {
            Setting::Off => return Ok(Tracing { provider: None }),
            Setting::FromEnv => None,
            Setting::To(url) => Some(url),
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        if let Some(url) = &endpoint {
            exporter = exporter.with_endpoint(url.clone());
        }
        let exporter = exporter.build()?;
        let mut resource = Resource::builder();
        if !names_service(env) {
            resource = resource.with_service_name(service);
        }
        // The SDK reads the OTEL_BSP_* variables; a value set here would override them.
        let mut batching = BatchConfigBuilder::default();
        let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
        if spans == Spans::Linked {
            if env("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
                batching = batching.with_max_queue_size(LINKED_QUEUE);
            }
            if env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").is_none() {
                batching = batching.with_max_export_batch_size(LINKED_EXPORT_BATCH);
            }
            if env(LINK_COUNT_LIMIT).is_none() {
                provider = provider.with_max_links_per_span(MAX_LINKS);
            }
        }
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batching.build())
            .build();
        let provider = provider.with_span_processor(processor).build();
        let _ = TRACER.set(provider.tracer("ferry"));
        tracing::info!(
            endpoint = endpoint.as_deref().unwrap_or("from OTEL_* variables"),
            "tracing on: spans are exported over OTLP/HTTP"
        );
        Ok(Tracing {
            provider: Some(provider),
        })
    }
}

/// Whether spans are being recorded (tracing was turned on in this process).
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// A span in progress; ends when dropped (or at [`Span::end`]).
pub struct Span(opentelemetry_sdk::trace::Span);

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_traceparent(self.0.span_context()))
    }
}

/// Starts a span named `name` as a child of the W3C `traceparent` text `parent` (a new trace
/// when it is `None` or not a valid traceparent); `None` when tracing is off, at the cost of
/// one atomic read.
pub fn start(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    parent: Option<&str>,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Option<Span> {
    let tracer = TRACER.get()?;
    let cx = match parent.and_then(parse_traceparent) {
        Some(remote) => Context::new().with_remote_span_context(remote),
        None => Context::new(),
    };
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes())
        .start_with_context(tracer, &cx);
    Some(Span(span))
}

/// Starts a new trace's span named `name`, linked to each valid W3C `traceparent` of `links`
/// (a batch's span, pointing at each of its messages' contexts); `None` when tracing is off,
/// at the cost of one atomic read.
pub fn start_linked<'a>(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    links: impl Iterator<Item = &'a str>,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Option<Span> {
    let tracer = TRACER.get()?;
    let links = links
        .filter_map(parse_traceparent)
        .map(Link::with_context)
        .collect();
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_links(links)
        .with_attributes(attributes())
        .start_with_context(tracer, &Context::new());
    Some(Span(span))
}

impl Span {
    /// Sets (or replaces) an attribute, for what is known only at the end (counts).
    pub fn attribute(&mut self, attribute: KeyValue) {
        self.0.set_attribute(attribute);
    }

    /// This span's context as a W3C `traceparent`, for the next hop's header.
    pub fn traceparent(&self) -> String {
        format_traceparent(self.0.span_context())
    }

    /// Records that something happened during the span (a retry, a dead letter).
    pub fn event(&mut self, name: &'static str, attributes: Vec<KeyValue>) {
        self.0.add_event(name, attributes);
    }

    /// Marks the span failed, with a short description.
    pub fn fail(&mut self, description: impl Into<Cow<'static, str>>) {
        self.0.set_status(Status::error(description));
    }

    /// Ends the span now.
    pub fn end(mut self) {
        self.0.end();
    }
}

/// The W3C Trace Context `traceparent` of `cx`: `00-<trace id>-<span id>-<flags>`.
pub fn format_traceparent(cx: &SpanContext) -> String {
    format!(
        "00-{:032x}-{:016x}-{:02x}",
        cx.trace_id(),
        cx.span_id(),
        cx.trace_flags().to_u8()
    )
}

/// A remote span context from a W3C `traceparent` (version `00`, or a later one read as
/// `00`, as the specification asks); `None` for anything invalid, all-zero ids included.
pub fn parse_traceparent(text: &str) -> Option<SpanContext> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    // Version ff is invalid; version 00 has exactly four fields.
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_survives_a_round_trip() {
        let cx = parse_traceparent(TP).expect("valid");
        assert!(cx.is_sampled() && cx.is_remote());
        assert_eq!(format_traceparent(&cx), TP);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let cx = parse_traceparent(unsampled).expect("valid");
        assert!(!cx.is_sampled());
        assert_eq!(format_traceparent(&cx), unsampled);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-abc-def-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} accepted");
        }
        // A later version may add fields; its first four are read.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
    }

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn tracing_is_off_unless_an_endpoint_is_set() {
        assert_eq!(setting(None, env(&[])), Setting::Off);
        assert_eq!(
            setting(None, env(&[(OTLP_ENDPOINT, "")])),
            Setting::Off,
            "an empty variable is unset"
        );
        assert_eq!(
            setting(None, env(&[(OTLP_ENDPOINT, "http://c:4318")])),
            Setting::FromEnv
        );
        assert_eq!(
            setting(
                None,
                env(&[(OTLP_TRACES_ENDPOINT, "http://c:4318/v1/traces")])
            ),
            Setting::FromEnv
        );
        assert_eq!(
            setting(Some("http://c:4318/"), env(&[])),
            Setting::To("http://c:4318/v1/traces".into())
        );
        assert_eq!(
            setting(Some("http://c:4318"), env(&[("OTEL_SDK_DISABLED", "true")])),
            Setting::Off
        );
        assert_eq!(
            setting(
                None,
                env(&[
                    (OTLP_ENDPOINT, "http://c"),
                    ("OTEL_TRACES_EXPORTER", "none")
                ])
            ),
            Setting::Off
        );
    }

    #[test]
    fn the_environment_may_name_the_service() {
        assert!(!names_service(env(&[])));
        assert!(names_service(env(&[("OTEL_SERVICE_NAME", "orders-relay")])));
        assert!(names_service(env(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "team=a, service.name=x"
        )])));
        assert!(!names_service(env(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.namespace=x"
        )])));
    }

    #[test]
    fn no_span_is_started_while_tracing_is_off() {
        assert!(!enabled());
        assert!(start("x", SpanKind::Internal, Some(TP), Vec::new).is_none());
    }
}
