//! EcsCapacityProvider end to end: an EC2 Auto Scaling group made in the emulator,
//! the provider made by the operator through the strict layer, a cluster that lists
//! it, and the ordered teardown.

use aws_sdk_autoscaling::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecs::types::CapacityProviderField;
use ecs_operator::api::capacity_provider::EcsCapacityProvider;
use ecs_operator::api::cluster::EcsCluster;
use ecs_operator::api::common::{UID_TAG, is_condition_true};
use ecs_operator::api::service::EcsService;
use ecs_operator::ecs::tags_from_sdk;
use kube::api::{Api, DeleteParams};

use crate::support::{TestContext, env, events_for, eventually, wait_for};

fn autoscaling() -> aws_sdk_autoscaling::Client {
    let conf = aws_sdk_autoscaling::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(testenv::REGION))
        .endpoint_url(&env().ecs_endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "e2e"))
        .build();
    aws_sdk_autoscaling::Client::from_conf(conf)
}

/// An Auto Scaling group of `desired` instances, made the way its owner would: not
/// by the operator. Returns its ARN.
async fn make_group(name: &str, desired: i32) -> String {
    let asg = autoscaling();
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .min_size(0)
        .max_size(10)
        .desired_capacity(desired)
        .new_instances_protected_from_scale_in(true)
        .availability_zones(format!("{}a", testenv::REGION))
        .send()
        .await
        .unwrap();
    let groups = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .unwrap();
    groups.auto_scaling_groups()[0]
        .auto_scaling_group_arn()
        .unwrap()
        .to_string()
}

fn manifest(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsCapacityProvider\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

fn ready(p: &EcsCapacityProvider) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.observed_generation == p.metadata.generation && is_condition_true(&s.conditions, "Ready")
    })
}

async fn ecs_provider(
    ctx: &TestContext,
    name: &str,
) -> Option<aws_sdk_ecs::types::CapacityProvider> {
    ctx.ecs
        .describe_capacity_providers()
        .capacity_providers(name)
        .include(CapacityProviderField::Tags)
        .send()
        .await
        .unwrap()
        .capacity_providers()
        .iter()
        .find(|p| p.name() == Some(name) && p.status().map(|s| s.as_str()) != Some("INACTIVE"))
        .cloned()
}

#[tokio::test]
async fn provider_follows_its_group_and_is_deleted_after_the_cluster_drops_it() {
    let ctx = TestContext::new("capacity-provider").await;
    let op = ctx.start_operator(&[]).await;
    let group = ctx.name("pool");
    let group_arn = make_group(&group, 2).await;
    let name = ctx.name("gpu");
    ctx.apply(&manifest(
        &name,
        &format!(
            "  autoScalingGroupName: {group}\n  managedScaling:\n    status: ENABLED\n    \
             targetCapacity: 90\n  managedTerminationProtection: ENABLED\n  tags:\n    team: ml\n"
        ),
    ))
    .await;
    let obj = wait_for(&ctx, &name, 60, "Ready", ready).await;
    let status = obj.status.clone().unwrap();
    assert_eq!(status.status.as_deref(), Some("ACTIVE"));
    assert_eq!(
        status.auto_scaling_group_arn.as_deref(),
        Some(group_arn.as_str())
    );
    assert_eq!(
        (status.desired_capacity, status.in_service_instances),
        (Some(2), Some(2))
    );
    assert_eq!(status.managed_scaling.as_deref(), Some("ENABLED"));

    // ECS holds exactly the spec, with ECS's defaults for the rest, and our tags.
    let made = ecs_provider(&ctx, &name).await.expect("provider in ECS");
    let asg = made.auto_scaling_group_provider().unwrap();
    assert_eq!(asg.auto_scaling_group_arn(), group_arn);
    let scaling = asg.managed_scaling().unwrap();
    assert_eq!(scaling.target_capacity(), Some(90));
    assert_eq!(scaling.instance_warmup_period(), Some(300));
    assert_eq!(
        asg.managed_termination_protection().map(|t| t.as_str()),
        Some("ENABLED")
    );
    let tags = tags_from_sdk(made.tags());
    assert_eq!(tags.get("team").map(String::as_str), Some("ml"));
    assert_eq!(tags.get(UID_TAG), obj.metadata.uid.as_ref());

    let (ok, table) = ctx.kubectl(&["get", "ecscp"], None).await;
    assert!(ok, "{table}");
    for col in [
        "ECS NAME",
        "STATUS",
        "SCALING",
        "DESIRED",
        "INSERVICE",
        "READY",
    ] {
        assert!(table.contains(col), "missing column {col}: {table}");
    }

    // Nothing changed: no write. A changed field: UpdateCapacityProvider with it
    // alone; the fields the spec leaves out keep their values.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let writes = op.ecs_writes().await;
    let reconciles = op.reconciles("EcsCapacityProvider").await;
    let (ok, out) = ctx
        .kubectl(&["label", "ecscp", &name, "touched=yes"], None)
        .await;
    assert!(ok, "{out}");
    eventually(30, "a reconcile after the label change", || async {
        (op.reconciles("EcsCapacityProvider").await > reconciles).then_some(())
    })
    .await;
    assert_eq!(
        op.ecs_writes().await,
        writes,
        "an unchanged provider costs no ECS write"
    );
    ctx.apply(&manifest(
        &name,
        &format!(
            "  autoScalingGroupName: {group}\n  managedScaling:\n    status: ENABLED\n    \
             targetCapacity: 70\n  managedTerminationProtection: ENABLED\n  tags:\n    team: ml\n"
        ),
    ))
    .await;
    wait_for(&ctx, &name, 60, "Ready for generation 2", ready).await;
    let updated = ecs_provider(&ctx, &name).await.unwrap();
    let scaling = updated
        .auto_scaling_group_provider()
        .unwrap()
        .managed_scaling()
        .unwrap();
    assert_eq!(
        (scaling.target_capacity(), scaling.instance_warmup_period()),
        (Some(70), Some(300))
    );
    let events = events_for(&ctx, &name).await;
    assert!(events.contains("managedScaling.targetCapacity"), "{events}");

    // A cluster uses it by reference (its strategy too): the provider says so, and its
    // deletion waits, naming the cluster.
    let cluster = ctx.name("ec2");
    let cluster_yaml = |providers: &str| {
        format!(
            "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsCluster\nmetadata:\n  name: {cluster}\n\
             spec:\n{providers}"
        )
    };
    ctx.apply(&cluster_yaml(&format!(
        "  capacityProviderRefs: [{{name: {name}}}]\n  \
         defaultCapacityProviderStrategy: [{{capacityProvider: {name}, weight: 1}}]\n"
    )))
    .await;
    wait_for(&ctx, &cluster, 60, "cluster Ready", |c: &EcsCluster| {
        c.status
            .as_ref()
            .is_some_and(|s| s.capacity_providers.contains(&name))
    })
    .await;
    wait_for(
        &ctx,
        &name,
        30,
        "status.clusters names the cluster",
        |p: &EcsCapacityProvider| {
            p.status
                .as_ref()
                .is_some_and(|s| s.clusters.contains(&cluster))
        },
    )
    .await;
    let providers = Api::<EcsCapacityProvider>::namespaced(ctx.kube.clone(), &ctx.namespace);
    providers
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let blocked = wait_for(
        &ctx,
        &name,
        60,
        "Stalled InUse",
        |p: &EcsCapacityProvider| {
            p.status
                .as_ref()
                .is_some_and(|s| stalled(&s.conditions, "InUse").is_some())
        },
    )
    .await;
    let message = stalled(&blocked.status.unwrap().conditions, "InUse").unwrap();
    assert!(
        message.contains(&format!("cluster: {cluster}")),
        "{message}"
    );
    assert!(
        ecs_provider(&ctx, &name).await.is_some(),
        "kept while a cluster lists it"
    );

    // The cluster drops it: the deletion completes by itself.
    ctx.apply(&cluster_yaml(
        "  capacityProviders: []\n  defaultCapacityProviderStrategy: []\n",
    ))
    .await;
    eventually(90, "the EcsCapacityProvider is deleted", || async {
        providers
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(ecs_provider(&ctx, &name).await.is_none(), "deleted in ECS");
    op.stop().await;
}

#[tokio::test]
async fn a_missing_group_waits_and_bad_specs_are_refused() {
    let ctx = TestContext::new("capacity-provider-admission").await;
    let op = ctx.start_operator(&[]).await;
    let name = ctx.name("later");
    let group = ctx.name("not-yet");
    ctx.apply(&manifest(
        &name,
        &format!("  autoScalingGroupName: {group}\n"),
    ))
    .await;
    wait_for(
        &ctx,
        &name,
        60,
        "WaitingForReference",
        |p: &EcsCapacityProvider| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Reconciling"
                        && c.reason == "WaitingForReference"
                        && c.message.contains(&group)
                })
            })
        },
    )
    .await;
    assert!(
        ecs_provider(&ctx, &name).await.is_none(),
        "nothing made without a group"
    );

    let refused = [
        (
            manifest("x1", "  name: ecs-pool\n  autoScalingGroupName: g\n"),
            "ECS reserves names starting with aws, ecs or fargate",
        ),
        (
            manifest(
                "x2",
                "  autoScalingGroupName: g\n  autoScalingGroupArn: arn:aws:autoscaling:us-east-1:1:autoScalingGroup:u:autoScalingGroupName/g\n",
            ),
            "set exactly one of autoScalingGroupArn and autoScalingGroupName",
        ),
        (
            manifest(
                "x3",
                "  autoScalingGroupName: g\n  managedTerminationProtection: ENABLED\n",
            ),
            "managedTerminationProtection ENABLED needs managedScaling.status ENABLED",
        ),
        (
            manifest(
                "x4",
                "  autoScalingGroupName: g\n  managedScaling:\n    minimumScalingStepSize: 5\n    maximumScalingStepSize: 2\n",
            ),
            "minimumScalingStepSize must not be greater than maximumScalingStepSize",
        ),
        (
            manifest(
                "x5",
                "  autoScalingGroupName: g\n  managedScaling:\n    targetCapacity: 101\n",
            ),
            "should be less than or equal to 100",
        ),
    ];
    for (yaml, says) in refused {
        let (ok, out) = ctx.kubectl(&["apply", "-f", "-"], Some(&yaml)).await;
        assert!(!ok && out.contains(says), "expected {says:?}: {out}");
    }
    // The group is immutable.
    let (ok, out) = ctx
        .kubectl(
            &["apply", "-f", "-"],
            Some(&manifest(&name, "  autoScalingGroupName: another\n")),
        )
        .await;
    assert!(
        !ok && out.contains("the Auto Scaling group is immutable"),
        "{out}"
    );

    // A cluster that references it waits too, and says for what.
    let cluster = ctx.name("waits");
    ctx.apply(&format!(
        "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsCluster\nmetadata:\n  name: {cluster}\n\
         spec:\n  capacityProviderRefs: [{{name: {name}}}]\n"
    ))
    .await;
    wait_for(
        &ctx,
        &cluster,
        60,
        "cluster WaitingForReference",
        |c: &EcsCluster| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.reason == "WaitingForReference" && c.message.contains(&name))
            })
        },
    )
    .await;

    // The group appears: the provider follows within its poll, the cluster after it.
    make_group(&group, 0).await;
    wait_for(&ctx, &name, 60, "Ready once the group exists", ready).await;
    wait_for(
        &ctx,
        &cluster,
        60,
        "the cluster lists it",
        |c: &EcsCluster| {
            c.status
                .as_ref()
                .is_some_and(|s| s.capacity_providers.contains(&name))
        },
    )
    .await;
    op.stop().await;
}

async fn register_instance(ctx: &TestContext, cluster: &str, id: &str) -> String {
    let resource = |name: &str, value| {
        aws_sdk_ecs::types::Resource::builder()
            .name(name)
            .r#type("INTEGER")
            .integer_value(value)
            .build()
    };
    ctx.ecs
        .register_container_instance()
        .cluster(cluster)
        .instance_identity_document(format!("{{\"instanceId\": \"{id}\"}}"))
        .total_resources(resource("CPU", 2048))
        .total_resources(resource("MEMORY", 3800))
        .send()
        .await
        .unwrap()
        .container_instance()
        .and_then(|i| i.container_instance_arn())
        .unwrap()
        .to_string()
}

/// The message of a Stalled=True condition with `reason`.
fn stalled(conditions: &[ecs_operator::api::common::Condition], reason: &str) -> Option<String> {
    conditions
        .iter()
        .find(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == reason)
        .map(|c| c.message.clone())
}

#[tokio::test]
async fn teardown_waits_for_instances_then_completes_in_order() {
    let ctx = TestContext::new("capacity-teardown").await;
    let op = ctx.start_operator(&[]).await;
    let group = ctx.name("pool");
    let group_arn = make_group(&group, 2).await;
    let provider = ctx.name("ec2");
    let cluster = ctx.name("batch");
    let app = ctx.name("job");
    ctx.apply(&format!(
        "{}---\napiVersion: ecs.operator.dev/v1alpha1\nkind: EcsCluster\nmetadata:\n  name: {cluster}\n\
         spec:\n  capacityProviderRefs: [{{name: {provider}}}]\n---\n\
         apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsTaskDefinition\nmetadata:\n  name: {app}\n\
         spec:\n  requiresCompatibilities: [EC2]\n  containerDefinitions:\n    - name: app\n      \
         image: busybox:1\n      memory: 64\n---\n\
         apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsService\nmetadata:\n  name: {app}\n\
         spec:\n  clusterRef: {{name: {cluster}}}\n  taskDefinitionRef: {{name: {app}}}\n  \
         desiredCount: 1\n  capacityProviderStrategy: [{{capacityProvider: {provider}, weight: 1}}]\n",
        manifest(&provider, &format!("  autoScalingGroupArn: {group_arn}\n"))
    ))
    .await;
    wait_for(
        &ctx,
        &cluster,
        90,
        "the cluster lists the provider",
        |c: &EcsCluster| {
            c.status
                .as_ref()
                .is_some_and(|s| s.capacity_providers.contains(&provider))
        },
    )
    .await;
    wait_for(
        &ctx,
        &app,
        90,
        "the service runs on the provider",
        |s: &EcsService| {
            s.status
                .as_ref()
                .is_some_and(|s| is_condition_true(&s.conditions, "Ready"))
        },
    )
    .await;

    // The group's instances register (their agents would): the cluster sums them up.
    let mut instances = Vec::new();
    for id in ["i-0aaa", "i-0bbb"] {
        instances.push(register_instance(&ctx, &cluster, id).await);
    }
    let (ok, out) = ctx
        .kubectl(&["label", "ecscl", &cluster, "look=again"], None)
        .await;
    assert!(ok, "{out}");
    let obj = wait_for(
        &ctx,
        &cluster,
        60,
        "container instances in status",
        |c: &EcsCluster| {
            c.status
                .as_ref()
                .and_then(|s| s.container_instances.as_ref())
                .is_some_and(|i| i.by_status.get("ACTIVE") == Some(&2))
        },
    )
    .await;
    let summary = obj.status.unwrap().container_instances.unwrap();
    assert_eq!(
        (summary.registered_cpu, summary.registered_memory_mib),
        (4096, 7600)
    );
    assert_eq!(
        (summary.agent_connected, summary.agent_disconnected),
        (2, 0)
    );

    // Delete everything, as a namespace teardown would: the service goes; the cluster and
    // the provider wait, each naming what holds it up.
    let all = "ecsservice,ecstaskdefinition,ecscluster,ecscapacityprovider";
    let (ok, out) = ctx
        .kubectl(&["delete", all, "--all", "--wait=false"], None)
        .await;
    assert!(ok, "{out}");
    let held = wait_for(
        &ctx,
        &cluster,
        60,
        "cluster Stalled InstancesRemain",
        |c: &EcsCluster| {
            c.status
                .as_ref()
                .is_some_and(|s| stalled(&s.conditions, "InstancesRemain").is_some())
        },
    )
    .await;
    let message = stalled(&held.status.unwrap().conditions, "InstancesRemain").unwrap();
    assert!(
        message.contains(&format!("{group} (capacity provider {provider})")),
        "{message}"
    );
    wait_for(
        &ctx,
        &provider,
        60,
        "provider Stalled InUse",
        |p: &EcsCapacityProvider| {
            p.status
                .as_ref()
                .is_some_and(|s| stalled(&s.conditions, "InUse").is_some())
        },
    )
    .await;

    // The instances go (the group scaled to 0): the cluster goes, then the provider.
    for arn in &instances {
        ctx.ecs
            .deregister_container_instance()
            .cluster(&cluster)
            .container_instance(arn)
            .force(true)
            .send()
            .await
            .unwrap();
    }
    let clusters = Api::<EcsCluster>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let providers = Api::<EcsCapacityProvider>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let services = Api::<EcsService>::namespaced(ctx.kube.clone(), &ctx.namespace);
    eventually(120, "service, cluster and provider deleted", || async {
        let service_gone = services.get_opt(&app).await.unwrap().is_none();
        let cluster_gone = clusters.get_opt(&cluster).await.unwrap().is_none();
        let provider_gone = providers.get_opt(&provider).await.unwrap().is_none();
        (service_gone && cluster_gone && provider_gone).then_some(())
    })
    .await;
    assert!(
        ecs_provider(&ctx, &provider).await.is_none(),
        "provider deleted in ECS"
    );
    op.stop().await;
}

#[tokio::test]
async fn dropping_a_provider_a_service_uses_names_the_service() {
    let ctx = TestContext::new("capacity-in-use").await;
    let op = ctx.start_operator(&[]).await;
    let cluster = ctx.name("spot");
    let yaml = |providers: &str| {
        format!(
            "apiVersion: ecs.operator.dev/v1alpha1\nkind: EcsCluster\nmetadata:\n  name: {cluster}\n\
             spec:\n  capacityProviders: {providers}\n  defaultCapacityProviderStrategy: []\n"
        )
    };
    ctx.apply(&yaml("[FARGATE, FARGATE_SPOT]")).await;
    wait_for(&ctx, &cluster, 60, "both providers", |c: &EcsCluster| {
        c.status
            .as_ref()
            .is_some_and(|s| s.capacity_providers.len() == 2)
    })
    .await;
    let td = ctx
        .ecs
        .register_task_definition()
        .family(ctx.name("spot"))
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("app")
                .image("busybox:1")
                .memory(64)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .unwrap()
        .to_string();
    let service = ctx.name("on-spot");
    ctx.ecs
        .create_service()
        .cluster(&cluster)
        .service_name(&service)
        .task_definition(td)
        .desired_count(0)
        .capacity_provider_strategy(
            aws_sdk_ecs::types::CapacityProviderStrategyItem::builder()
                .capacity_provider("FARGATE_SPOT")
                .weight(1)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    ctx.apply(&yaml("[FARGATE]")).await;
    let refused = wait_for(
        &ctx,
        &cluster,
        60,
        "Stalled naming the service",
        |c: &EcsCluster| {
            c.status.as_ref().is_some_and(|s| {
                stalled(&s.conditions, "EcsRejected").is_some_and(|m| m.contains(&service))
            })
        },
    )
    .await;
    let message = stalled(&refused.status.unwrap().conditions, "EcsRejected").unwrap();
    assert!(
        message.contains("The specified capacity provider is in use"),
        "{message}"
    );
    assert!(message.contains("services using FARGATE_SPOT"), "{message}");
    op.stop().await;
}
