//! End-to-end tests against the real test environment: a kube-apiserver +
//! etcd built from the official Kubernetes modules and an ECS API endpoint,
//! all on 127.0.0.1 (see `support` and the `testenv` crate).

mod autoscaling;
mod bad_input;
mod capacity_provider;
mod cluster;
mod deploy;
mod gitops;
mod leader;
mod real_ecs;
mod scheduled_task;
mod service;
mod smoke;
mod support;
mod task;
mod task_definition;
