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

named_enum! {
    /// The kinds of [`Error`]: the metric label and Event reason (`Category::ALL` creates the
    /// metric series at zero).
    pub enum Category {
        KubeApi = "KubeApi",
        Bus = "Bus",
        Finalizer = "Finalizer",
        InvalidObject = "InvalidObject",
    }
}

impl Error {
    /// Stable, low-cardinality name of the error kind.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => Category::KubeApi,
            Self::Bus(_) => Category::Bus,
            Self::Finalizer(_) => Category::Finalizer,
            Self::Invalid(_) => Category::InvalidObject,
        }
        .as_str()
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
