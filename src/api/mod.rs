//! The custom resources users write: one file per kind plus shared types.

pub mod capacity_provider;
pub mod cluster;
pub mod common;
pub mod reason;
pub mod scheduled_task;
pub mod service;
pub mod service_scaling;
pub mod task;
pub mod task_definition;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::error::Error;

crate::kind_status!(
    cluster::EcsClusterStatus,
    task_definition::EcsTaskDefinitionStatus,
    service::EcsServiceStatus,
    task::EcsTaskStatus,
    scheduled_task::EcsScheduledTaskStatus,
    capacity_provider::EcsCapacityProviderStatus,
);

pub const GROUP: &str = "ecs.operator.dev";
pub const VERSION: &str = "v1alpha1";

/// Every CRD the operator serves, in the order of `kinds::all()`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    crate::kinds::all()
        .iter()
        .map(|k| unwrap_descriptions((k.crd)()))
        .collect()
}

/// Doc comments are wrapped at 100 columns in the source; `kubectl explain` wraps by
/// itself, so line breaks inside a paragraph are turned back into spaces.
fn unwrap_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    match v {
                        serde_json::Value::String(s) if k == "description" => *s = unwrap(s),
                        other => walk(other),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut v) = serde_json::to_value(&crd) else {
        return crd;
    };
    walk(&mut v);
    serde_json::from_value(v).unwrap_or(crd)
}

fn unwrap(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_read_as_paragraphs() {
        assert_eq!(unwrap("a b\nc d\n\ne"), "a b c d\n\ne");
        let yaml = crds_yaml().unwrap();
        assert!(
            yaml.contains("Number of tasks to keep running. Omitted: the operator never changes ECS's desiredCount"),
            "descriptions are still wrapped"
        );
    }
}
