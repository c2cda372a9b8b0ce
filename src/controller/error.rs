//! Errors of the reconcilers. Each variant maps to a stable `category()`, used as the metric
//! label and the Event reason, never the free-form message.

use crate::bus::BusError;

/// What can stop a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a call.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Redis (inboxes, roster, memory) failed.
    #[error("message bus: {0}")]
    Bus(#[from] BusError),
    /// The finalizer helper failed around a reconcile.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// An object lacks what the API server always sets (namespace, uid), or a spec the schema
    /// should have refused slipped through.
    #[error("invalid object: {0}")]
    Invalid(String),
}

impl Error {
    /// Stable, low-cardinality name of the error kind.
    /// Every value of [`Error::category`], for metrics created at zero.
    pub const CATEGORIES: [&'static str; 4] = ["KubeApi", "Bus", "Finalizer", "InvalidObject"];

    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubeApi",
            Self::Bus(_) => "Bus",
            Self::Finalizer(_) => "Finalizer",
            Self::Invalid(_) => "InvalidObject",
        }
    }
}

/// Result of reconcile steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Treats 404 Not Found as done: deleting or patching what is already gone is success.
pub fn ignore_not_found(r: kube::Result<()>) -> kube::Result<()> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other,
    }
}
