//! The subcommands, one module each.

pub(crate) mod classify;
pub(crate) mod ctl;
pub(crate) mod demo;
pub(crate) mod serve;

/// Why a subcommand failed, and so its exit status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// The configuration (or a flag) is wrong: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Reading, writing or serving failed: exit 1.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Anything else that stopped the command: exit 1.
    #[error("{0}")]
    Other(String),
}

impl Failure {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Io(_) | Self::Other(_) => 1,
        }
    }
}

/// A Tokio runtime for a subcommand.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::Io)
}

/// Completes on Ctrl-C or (on Unix) SIGTERM.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
