//! ecs-operator: a Kubernetes operator that makes Amazon ECS declarative.
//!
//! Layout (see DESIGN.md §2): `api` holds the CRD types, `ecs` the thin adapter
//! over aws-sdk-ecs, `telemetry` logging/metrics; reconcilers arrive per kind.

pub mod api;
pub mod ecs;
pub mod error;
pub mod reconcile;
pub mod telemetry;

pub use error::{Error, ErrorClass};

/// Field manager for everything the operator writes with server-side apply.
pub const FIELD_MANAGER: &str = "ecs-operator";
