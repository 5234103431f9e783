//! The custom resources users write: one file per kind plus shared types.

pub mod cluster;
pub mod common;
pub mod scheduled_task;
pub mod service;
pub mod task;
pub mod task_definition;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::error::Error;

pub const GROUP: &str = "ecs.operator.dev";
pub const VERSION: &str = "v1alpha1";

/// Every CRD the operator serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        cluster::EcsCluster::crd(),
        task_definition::EcsTaskDefinition::crd(),
        service::EcsService::crd(),
        task::EcsTask::crd(),
        scheduled_task::EcsScheduledTask::crd(),
    ]
}

/// The CRDs as a multi-document YAML stream, as written to `crds/`.
pub fn crds_yaml() -> Result<String, Error> {
    let mut out = String::new();
    for crd in crds() {
        let doc = serde_saphyr::to_string(&crd).map_err(|e| Error::Serialization {
            what: "CustomResourceDefinition",
            message: e.to_string(),
        })?;
        out.push_str("---\n");
        out.push_str(&doc);
    }
    Ok(out)
}
