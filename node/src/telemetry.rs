//! Logging with `tracing` (text or JSON), plus OpenTelemetry span export over OTLP/gRPC when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Keeps the exporter alive; call [`Telemetry::shutdown`] before exit to flush spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(Err(e)) = self.provider.map(|p| p.shutdown()) {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

fn otlp_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
}

/// Install the global subscriber. Must run inside the Tokio runtime (the OTLP exporter uses it).
pub fn init(format: LogFormat, service_name: &str) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,h2=warn,tower=warn"));
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_target(false).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
    };
    let provider = if otlp_configured() {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(service_name.to_string()).build())
                .build(),
        )
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("ferrokv")));
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(Telemetry { provider })
}
