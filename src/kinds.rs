//! The one list of kinds the operator serves. The controllers, the CRDs, and the
//! coverage checks for RBAC, the Argo CD health script and the samples all follow
//! it: a new kind is its own module plus one line in [`all`] (see
//! docs/adding-a-kind.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::capacity_provider::EcsCapacityProvider;
use crate::api::cluster::EcsCluster;
use crate::api::scheduled_task::EcsScheduledTask;
use crate::api::service::EcsService;
use crate::api::task::EcsTask;
use crate::api::task_definition::EcsTaskDefinition;
use crate::reconcile::{Context, Managed};

/// Resolves when the operator shuts down.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;
type Controller = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One kind: what the rest of the operator needs to know about it.
pub struct Kind {
    /// `EcsService`.
    pub kind: &'static str,
    /// `ecsservices`, as in RBAC rules and URLs.
    pub plural: String,
    pub crd: fn() -> CustomResourceDefinition,
    controller: fn(Arc<Context>, Option<String>, u16, Shutdown) -> Controller,
}

fn controller<K: Managed>(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: Shutdown,
) -> Controller {
    Box::pin(async move {
        crate::reconcile::run::<K>(ctx, namespace.as_deref(), concurrency, shutdown).await
    })
}

impl Kind {
    fn of<K: Managed + CustomResourceExt>() -> Kind {
        Kind {
            kind: K::KIND,
            plural: K::plural(&()).into_owned(),
            crd: K::crd,
            controller: controller::<K>,
        }
    }

    /// The controller for this kind, running until `shutdown` resolves.
    pub fn controller(
        &self,
        ctx: Arc<Context>,
        namespace: Option<String>,
        concurrency: u16,
        shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send + use<> {
        (self.controller)(ctx, namespace, concurrency, shutdown)
    }
}

/// Every kind, in a stable order (the order of `crds/`).
pub fn all() -> Vec<Kind> {
    vec![
        Kind::of::<EcsCluster>(),
        Kind::of::<EcsTaskDefinition>(),
        Kind::of::<EcsService>(),
        Kind::of::<EcsTask>(),
        Kind::of::<EcsScheduledTask>(),
        Kind::of::<EcsCapacityProvider>(),
    ]
}

#[cfg(test)]
mod tests {
    //! What has to name every kind besides the code: checked from the list, so a
    //! kind added to `all()` and forgotten elsewhere fails here with what to add.

    use super::*;

    fn read(path: &str) -> String {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
    }

    #[test]
    fn kinds_are_listed_once_with_their_plurals() {
        let kinds = all();
        let mut names: Vec<&str> = kinds.iter().map(|k| k.kind).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), kinds.len());
        for k in &kinds {
            assert_eq!(k.plural, format!("{}s", k.kind.to_ascii_lowercase()));
            let crd = (k.crd)();
            assert_eq!(crd.spec.names.kind, k.kind);
            assert_eq!(crd.spec.names.plural, k.plural);
        }
    }

    #[test]
    fn rbac_grants_every_kind_its_resource_and_status() {
        for file in [
            "config/rbac/role.yaml",
            "charts/ecs-operator/templates/rbac.yaml",
        ] {
            let rbac = read(file);
            for k in all() {
                let resource = &k.plural;
                assert!(
                    rbac.contains(&format!(" {resource},"))
                        || rbac.contains(&format!(" {resource}]"))
                        || rbac.contains(&format!("[{resource}"))
                        || rbac.contains(&format!("- {resource}\n")),
                    "{file}: add {resource} to the ClusterRole's resources"
                );
                assert!(
                    rbac.contains(&format!("{resource}/status")),
                    "{file}: add {resource}/status (patch) to the ClusterRole"
                );
            }
        }
    }

    #[test]
    fn argo_cd_health_and_samples_cover_every_kind() {
        let argocd = read("docs/argocd/README.md") + &read("docs/argocd/health.lua");
        let samples: String = std::fs::read_dir(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples"),
        )
        .expect("config/samples")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
        let crds = read("crds/ecs-operator.yaml");
        for k in all() {
            let kind = k.kind;
            assert!(argocd.contains(kind), "docs/argocd: name {kind}");
            assert!(
                samples.contains(&format!("kind: {kind}\n")),
                "config/samples: add a sample {kind}"
            );
            assert!(
                crds.contains(&format!("kind: {kind}\n")),
                "crds/: run `make crds`"
            );
        }
    }
}
