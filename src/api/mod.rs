//! The custom resources users write: one file per kind plus shared types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::error::Error;

pub const GROUP: &str = "ecs.operator.dev";
pub const VERSION: &str = "v1alpha1";

/// Every CRD the operator serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    // Kinds are added here as they land (EcsCluster, EcsTaskDefinition, ...).
    Vec::new()
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
