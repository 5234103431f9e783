//! ecs-operator: a Kubernetes operator that makes Amazon ECS declarative.
//!
//! Layout (see DESIGN.md §2): `api` holds the CRD types, `ecs` the thin adapter
//! over aws-sdk-ecs, `reconcile` the generic driver, the shared layer for
//! ECS-backed kinds and one module per kind, `kinds` the one list of kinds,
//! `telemetry` logging/metrics.

pub mod api;
pub mod ecs;
pub mod error;
pub mod kinds;
pub mod reconcile;
pub mod telemetry;

pub use error::{Error, ErrorClass};

/// Field manager for everything the operator writes with server-side apply.
pub const FIELD_MANAGER: &str = "ecs-operator";
