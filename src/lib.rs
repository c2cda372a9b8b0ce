//! team-operator: runs teams of AI agents on Kubernetes.

pub mod bus;
