//! Logs: JSON lines (`log.format = "json"`, the container default) or readable
//! text, filtered by `RUST_LOG` if set, else by `log.level`. Each line carries
//! the fields of the spans it was written in, so every line of a request
//! (including those written inside actors) has its `request_id`.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Returns false if one was already installed
/// (tests start several apps in one process).
pub fn init(config: &LogConfig) -> bool {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match config.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
            .is_ok(),
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(std::io::stdout().is_terminal()))
            .try_init()
            .is_ok(),
    }
}
