//! Pure decisions for `EcsService.spec.autoScaling`: which Application Auto Scaling
//! writes make the target, policies and scheduled actions match the spec, who owns
//! the task count, and what status says.

use std::collections::BTreeMap;

use crate::api::common::Health;
use crate::api::reason::Reason;
use crate::api::service::EcsServiceSpec;
use crate::api::service_scaling::{
    AutoScaling, AutoScalingStatus, CountOwner, ScalingPolicyStatus, ScheduledActionStatus,
    ScheduledScaling, StepScalingPolicy, TargetTrackingPolicy,
};
use crate::ecs::scaling::{ObservedPolicy, ObservedScaling, ScalingWrite};

/// What the plan needs besides the spec and what Application Auto Scaling has.
#[derive(Debug, Clone)]
pub struct ScalingDesired<'a> {
    pub spec: Option<&'a AutoScaling>,
    /// spec.adoptExisting: a target registered outside may be taken over.
    pub adopt: bool,
    /// The target is this resource's: status says so, or its tags name this resource.
    pub target_owned: bool,
    /// Ownership tags for a target the operator registers.
    pub tags: &'a BTreeMap<String, String>,
    /// Policies and scheduled actions the operator made earlier (status).
    pub previous: Option<&'a AutoScalingStatus>,
}

/// The outcome of comparing spec and Application Auto Scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalingPlan {
    /// No autoScaling and no target: nothing to do.
    Unscaled,
    /// A target registered outside this resource and no autoScaling in the spec: left
    /// alone; the operator never writes desiredCount while it exists.
    External,
    /// A person has to act (a foreign target without adoptExisting).
    Refuse(Health),
    /// These writes (none: in sync). `changed` names what differs, for Events.
    Apply {
        writes: Vec<ScalingWrite>,
        changed: Vec<String>,
    },
}

/// The count a new service starts with: spec.desiredCount (else minCapacity), clamped
/// into [minCapacity, maxCapacity]. Application Auto Scaling moves it from there.
pub fn initial_count(desired_count: Option<i32>, scaling: &AutoScaling) -> i32 {
    desired_count.unwrap_or(scaling.min_capacity).clamp(
        scaling.min_capacity,
        scaling.min_capacity.max(scaling.max_capacity),
    )
}

/// Who owns desiredCount, given whether a target registered elsewhere exists.
pub fn count_owner(spec: &EcsServiceSpec, external_target: bool) -> CountOwner {
    match (&spec.auto_scaling, external_target, spec.desired_count) {
        (Some(_), _, _) => CountOwner::AutoScaling,
        (None, true, _) => CountOwner::External,
        (None, false, Some(_)) => CountOwner::Spec,
        (None, false, None) => CountOwner::Ecs,
    }
}

/// The spec as ECS should see it: with a scaler owning the count, desiredCount is
/// the initial count at create and never written afterwards.
pub fn spec_for_ecs(
    spec: &EcsServiceSpec,
    creating: bool,
    external_target: bool,
) -> EcsServiceSpec {
    let mut effective = spec.clone();
    effective.desired_count = match (&spec.auto_scaling, creating, external_target) {
        (Some(scaling), true, _) => Some(initial_count(spec.desired_count, scaling)),
        (Some(_), false, _) | (None, false, true) => None,
        (None, _, _) => spec.desired_count,
    };
    effective
}

pub fn plan(desired: &ScalingDesired, observed: &ObservedScaling) -> ScalingPlan {
    let Some(spec) = desired.spec else {
        return match (&observed.target, desired.target_owned) {
            (None, _) => ScalingPlan::Unscaled,
            (Some(_), true) => ScalingPlan::Apply {
                writes: vec![ScalingWrite::Deregister],
                changed: vec!["autoScaling (removed)".into()],
            },
            (Some(_), false) => ScalingPlan::External,
        };
    };
    if let Some(target) = &observed.target
        && !desired.target_owned
        && !desired.adopt
    {
        return ScalingPlan::Refuse(Health::stalled(
            Reason::NotOwned,
            format!(
                "Application Auto Scaling target {} was registered outside this resource; \
                 set adoptExisting: true to manage it from spec.autoScaling",
                target.resource_id
            ),
        ));
    }
    let mut writes = Vec::new();
    let mut changed = Vec::new();
    target_writes(desired, spec, observed, &mut writes, &mut changed);
    detach_writes(desired, spec, observed, &mut writes, &mut changed);
    policy_writes(desired, spec, &observed.policies, &mut writes, &mut changed);
    step_writes(spec, observed, &mut writes, &mut changed);
    action_writes(desired, spec, &observed.actions, &mut writes, &mut changed);
    ScalingPlan::Apply { writes, changed }
}

fn target_writes(
    desired: &ScalingDesired,
    spec: &AutoScaling,
    observed: &ObservedScaling,
    writes: &mut Vec<ScalingWrite>,
    changed: &mut Vec<String>,
) {
    let suspended = spec.suspended.unwrap_or_default();
    let register = |tags: BTreeMap<String, String>| ScalingWrite::Register {
        min_capacity: spec.min_capacity,
        max_capacity: spec.max_capacity,
        suspended,
        tags,
    };
    let Some(target) = &observed.target else {
        writes.push(register(desired.tags.clone()));
        changed.push("autoScaling (registered)".into());
        return;
    };
    let mut differs = |field: &str, is_different: bool| {
        if is_different {
            changed.push(format!("autoScaling.{field}"));
        }
        is_different
    };
    let min = differs("minCapacity", target.min_capacity != spec.min_capacity);
    let max = differs("maxCapacity", target.max_capacity != spec.max_capacity);
    let paused = differs("suspended", target.suspended != suspended);
    if min || max || paused {
        writes.push(register(BTreeMap::new()));
    }
}

/// Whether what Application Auto Scaling has matches the spec's policy. Fields the
/// spec leaves out (cooldowns, disableScaleIn) keep whatever the policy has.
fn policy_matches(want: &TargetTrackingPolicy, have: &ObservedPolicy) -> bool {
    let Some(have) = &have.target_tracking else {
        return false;
    };
    let kept = |w: Option<i32>, h: Option<i32>| w.is_none() || w == h;
    want.predefined_metric == have.predefined_metric
        && want.resource_label == have.resource_label
        && want.customized_metric == have.customized_metric
        && (want.target_value - have.target_value).abs() <= 1e-9 * want.target_value.abs()
        && kept(want.scale_in_cooldown, have.scale_in_cooldown)
        && kept(want.scale_out_cooldown, have.scale_out_cooldown)
        && (want.disable_scale_in.is_none()
            || want.disable_scale_in.unwrap_or(false) == have.disable_scale_in.unwrap_or(false))
}

/// Names the operator made earlier: only those are removed when the spec drops them.
fn made_policies<'a>(desired: &'a ScalingDesired) -> impl Iterator<Item = &'a str> {
    desired
        .previous
        .into_iter()
        .flat_map(|s| s.policies.iter())
        .filter(|p| p.managed)
        .map(|p| p.name.as_str())
}

fn made_actions<'a>(desired: &'a ScalingDesired) -> impl Iterator<Item = &'a str> {
    desired
        .previous
        .into_iter()
        .flat_map(|s| s.scheduled_actions.iter())
        .filter(|a| a.managed)
        .map(|a| a.name.as_str())
}

fn policy_writes(
    desired: &ScalingDesired,
    spec: &AutoScaling,
    observed: &[ObservedPolicy],
    writes: &mut Vec<ScalingWrite>,
    changed: &mut Vec<String>,
) {
    for want in &spec.target_tracking {
        let have = observed.iter().find(|p| p.name == want.name);
        if !have.is_some_and(|h| policy_matches(want, h)) {
            writes.push(ScalingWrite::PutPolicy(want.clone()));
            changed.push(format!("autoScaling.targetTracking[{}]", want.name));
        }
    }
    for name in made_policies(desired) {
        let in_spec = spec.target_tracking.iter().any(|p| p.name == name)
            || spec.step_scaling.iter().any(|p| p.name == name);
        if !in_spec && observed.iter().any(|p| p.name == name) {
            writes.push(ScalingWrite::DeletePolicy(name.to_string()));
            changed.push(format!("autoScaling.targetTracking[{name}] (removed)"));
        }
    }
}

/// Whether the step policy Application Auto Scaling has matches the spec's (the
/// alarm is compared on CloudWatch's side). A cooldown or aggregation left out keeps
/// what the policy has.
fn step_matches(want: &StepScalingPolicy, have: &ObservedPolicy) -> bool {
    let Some(have) = &have.step else {
        return false;
    };
    let same_bound = |w: Option<f64>, h: Option<f64>| match (w, h) {
        (Some(w), Some(h)) => (w - h).abs() <= 1e-9 * w.abs().max(1.0),
        (w, h) => w.is_none() && h.is_none(),
    };
    let steps_match = want.steps.len() == have.steps.len()
        && want.steps.iter().zip(&have.steps).all(|(w, h)| {
            w.scaling_adjustment == h.scaling_adjustment
                && same_bound(w.metric_interval_lower_bound, h.metric_interval_lower_bound)
                && same_bound(w.metric_interval_upper_bound, h.metric_interval_upper_bound)
        });
    steps_match
        && want.adjustment_type == have.adjustment_type
        && (want.cooldown.is_none() || want.cooldown == have.cooldown)
        && (want.metric_aggregation_type.is_none()
            || want.metric_aggregation_type == have.metric_aggregation_type)
        && (want.min_adjustment_magnitude.is_none()
            || want.min_adjustment_magnitude == have.min_adjustment_magnitude)
}

/// Step policies: put what differs, then make sure each existing alarm runs it.
fn step_writes(
    spec: &AutoScaling,
    observed: &ObservedScaling,
    writes: &mut Vec<ScalingWrite>,
    changed: &mut Vec<String>,
) {
    for want in &spec.step_scaling {
        let have = observed.policies.iter().find(|p| p.name == want.name);
        if !have.is_some_and(|h| step_matches(want, h)) {
            writes.push(ScalingWrite::PutStepPolicy(want.clone()));
            changed.push(format!("autoScaling.stepScaling[{}]", want.name));
        }
        let Some(actions) = observed.alarm_actions.get(&want.alarm_name) else {
            continue; // `missing_alarms` reports it
        };
        if !have.is_some_and(|h| actions.contains(&h.arn)) {
            writes.push(ScalingWrite::AttachAlarm {
                policy: want.name.clone(),
                alarm: want.alarm_name.clone(),
            });
            changed.push(format!(
                "autoScaling.stepScaling[{}].alarmName ({})",
                want.name, want.alarm_name
            ));
        }
    }
}

/// The alarms the operator attached earlier that no longer run that policy by the
/// spec (policy removed, or its alarmName changed): the policy's ARN leaves them,
/// before the policy goes.
fn detach_writes(
    desired: &ScalingDesired,
    spec: &AutoScaling,
    observed: &ObservedScaling,
    writes: &mut Vec<ScalingWrite>,
    changed: &mut Vec<String>,
) {
    let earlier = desired.previous.into_iter().flat_map(|s| s.policies.iter());
    for made in earlier.filter(|p| p.managed && p.type_ == STEP_SCALING) {
        let Some(have) = observed.policies.iter().find(|p| p.name == made.name) else {
            continue;
        };
        let wanted = spec.step_scaling.iter().find(|p| p.name == made.name);
        for alarm in &made.alarms {
            let kept = wanted.is_some_and(|w| &w.alarm_name == alarm);
            let runs_it = observed
                .alarm_actions
                .get(alarm)
                .is_some_and(|actions| actions.contains(&have.arn));
            if !kept && runs_it {
                writes.push(ScalingWrite::DetachAlarm {
                    policy: made.name.clone(),
                    alarm: alarm.clone(),
                });
                changed.push(format!(
                    "autoScaling.stepScaling[{}] (alarm {alarm} released)",
                    made.name
                ));
            }
        }
    }
}

/// Application Auto Scaling's name for a step scaling policy.
pub const STEP_SCALING: &str = "StepScaling";

/// The CloudWatch alarms step policies name that do not exist (the service waits for
/// them; their policies are put and attached once they do).
pub fn missing_alarms(spec: Option<&AutoScaling>, observed: &ObservedScaling) -> Vec<String> {
    spec.into_iter()
        .flat_map(|s| s.step_scaling.iter())
        .map(|p| &p.alarm_name)
        .filter(|a| !observed.alarm_actions.contains_key(*a))
        .cloned()
        .collect()
}

/// The alarms to read: those the spec's step policies name and those the operator
/// attached earlier.
pub fn alarms_to_read(
    spec: Option<&AutoScaling>,
    previous: Option<&AutoScalingStatus>,
) -> Vec<String> {
    let named = spec
        .into_iter()
        .flat_map(|s| s.step_scaling.iter())
        .map(|p| p.alarm_name.clone());
    let attached = previous
        .into_iter()
        .flat_map(|s| s.policies.iter())
        .filter(|p| p.managed && p.type_ == STEP_SCALING)
        .flat_map(|p| p.alarms.iter().cloned());
    let mut all: Vec<String> = named.chain(attached).collect();
    all.sort();
    all.dedup();
    all
}

/// A spec field left out (timezone, one side of the range) keeps what the action has.
fn action_matches(want: &ScheduledScaling, have: &ScheduledScaling) -> bool {
    let kept = |w: Option<i32>, h: Option<i32>| w.is_none() || w == h;
    want.schedule == have.schedule
        && (want.timezone.is_none() || want.timezone == have.timezone)
        && kept(want.min_capacity, have.min_capacity)
        && kept(want.max_capacity, have.max_capacity)
}

fn action_writes(
    desired: &ScalingDesired,
    spec: &AutoScaling,
    observed: &[ScheduledScaling],
    writes: &mut Vec<ScalingWrite>,
    changed: &mut Vec<String>,
) {
    for want in &spec.scheduled {
        let have = observed.iter().find(|a| a.name == want.name);
        if !have.is_some_and(|h| action_matches(want, h)) {
            writes.push(ScalingWrite::PutAction(want.clone()));
            changed.push(format!("autoScaling.scheduled[{}]", want.name));
        }
    }
    for name in made_actions(desired) {
        let in_spec = spec.scheduled.iter().any(|a| a.name == name);
        if !in_spec && observed.iter().any(|a| a.name == name) {
            writes.push(ScalingWrite::DeleteAction(name.to_string()));
            changed.push(format!("autoScaling.scheduled[{name}] (removed)"));
        }
    }
}

/// A policy's alarms: those Application Auto Scaling lists (target tracking makes
/// its own) and the CloudWatch alarms seen running it.
fn policy_alarms(policy: &ObservedPolicy, observed: &ObservedScaling) -> Vec<String> {
    let running = observed
        .alarm_actions
        .iter()
        .filter(|(_, actions)| actions.contains(&policy.arn))
        .map(|(name, _)| name.clone());
    let mut alarms: Vec<String> = policy.alarms.iter().cloned().chain(running).collect();
    alarms.sort();
    alarms.dedup();
    alarms
}

/// Status from what Application Auto Scaling has (None: no target). A policy or
/// action is `managed` when the spec names it or the operator made it earlier.
pub fn status(
    desired: &ScalingDesired,
    resource_id: &str,
    observed: &ObservedScaling,
) -> Option<AutoScalingStatus> {
    let target = observed.target.as_ref()?;
    let managed = desired.spec.is_some() && (desired.target_owned || desired.adopt);
    let spec = desired.spec;
    let policy_made = |name: &str| {
        spec.is_some_and(|s| {
            s.target_tracking.iter().any(|p| p.name == name)
                || s.step_scaling.iter().any(|p| p.name == name)
        }) || (managed && made_policies(desired).any(|n| n == name))
    };
    let action_made = |name: &str| {
        spec.is_some_and(|s| s.scheduled.iter().any(|a| a.name == name))
            || (managed && made_actions(desired).any(|n| n == name))
    };
    Some(AutoScalingStatus {
        resource_id: resource_id.to_string(),
        managed,
        min_capacity: Some(target.min_capacity),
        max_capacity: Some(target.max_capacity),
        suspended: Some(target.suspended).filter(|s| *s != Default::default()),
        policies: observed
            .policies
            .iter()
            .map(|p| ScalingPolicyStatus {
                name: p.name.clone(),
                type_: p.type_.clone(),
                arn: Some(p.arn.clone()),
                alarms: policy_alarms(p, observed),
                managed: managed && policy_made(&p.name),
            })
            .collect(),
        scheduled_actions: observed
            .actions
            .iter()
            .map(|a| ScheduledActionStatus {
                name: a.name.clone(),
                schedule: a.schedule.clone(),
                timezone: a.timezone.clone(),
                min_capacity: a.min_capacity,
                max_capacity: a.max_capacity,
                managed: managed && action_made(&a.name),
            })
            .collect(),
        activities: observed.activities.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::service_scaling::{PredefinedMetric, Suspended};
    use crate::ecs::scaling::ObservedTarget;

    const ID: &str = "service/prod/web";

    fn cpu(target: f64) -> TargetTrackingPolicy {
        TargetTrackingPolicy {
            name: "cpu".into(),
            predefined_metric: Some(PredefinedMetric::Cpu),
            target_value: target,
            ..Default::default()
        }
    }

    fn nightly() -> ScheduledScaling {
        ScheduledScaling {
            name: "nightly".into(),
            schedule: "cron(0 22 * * ? *)".into(),
            timezone: Some("Europe/Berlin".into()),
            min_capacity: Some(1),
            max_capacity: Some(3),
        }
    }

    fn scaling() -> AutoScaling {
        AutoScaling {
            min_capacity: 2,
            max_capacity: 10,
            target_tracking: vec![cpu(60.0)],
            step_scaling: vec![],
            scheduled: vec![nightly()],
            suspended: None,
        }
    }

    fn target(min: i32, max: i32) -> ObservedTarget {
        ObservedTarget {
            resource_id: ID.into(),
            arn: Some("arn:aws:application-autoscaling:eu-west-1:1:scalable-target/x".into()),
            min_capacity: min,
            max_capacity: max,
            suspended: Suspended::default(),
        }
    }

    /// What Application Auto Scaling reports for a policy it stored from `p`, with its
    /// defaults filled in (cooldowns 300, scale-in enabled).
    fn stored(p: &TargetTrackingPolicy) -> ObservedPolicy {
        let mut have = p.clone();
        have.scale_in_cooldown = have.scale_in_cooldown.or(Some(300));
        have.scale_out_cooldown = have.scale_out_cooldown.or(Some(300));
        have.disable_scale_in = have.disable_scale_in.or(Some(false));
        ObservedPolicy {
            name: p.name.clone(),
            type_: "TargetTrackingScaling".into(),
            arn: format!("arn:policy/{}", p.name),
            alarms: vec![format!("TargetTracking-{ID}-AlarmHigh")],
            target_tracking: Some(have),
            step: None,
        }
    }

    /// Everything of `spec` as Application Auto Scaling would hold it.
    fn in_sync(spec: &AutoScaling) -> ObservedScaling {
        ObservedScaling {
            target: Some(target(spec.min_capacity, spec.max_capacity)),
            policies: spec.target_tracking.iter().map(stored).collect(),
            actions: spec.scheduled.clone(),
            activities: vec![],
            alarm_actions: BTreeMap::new(),
        }
    }

    fn made(spec: &AutoScaling) -> AutoScalingStatus {
        let desired = ScalingDesired {
            spec: Some(spec),
            adopt: false,
            target_owned: true,
            tags: &BTreeMap::new(),
            previous: None,
        };
        status(&desired, ID, &in_sync(spec)).expect("a target")
    }

    fn desired<'a>(
        spec: Option<&'a AutoScaling>,
        owned: bool,
        tags: &'a BTreeMap<String, String>,
        previous: Option<&'a AutoScalingStatus>,
    ) -> ScalingDesired<'a> {
        ScalingDesired {
            spec,
            adopt: false,
            target_owned: owned,
            tags,
            previous,
        }
    }

    fn writes(plan: ScalingPlan) -> Vec<ScalingWrite> {
        match plan {
            ScalingPlan::Apply { writes, .. } => writes,
            other => panic!("expected writes, got {other:?}"),
        }
    }

    #[test]
    fn the_initial_count_is_clamped_into_the_range() {
        let s = scaling();
        assert_eq!(initial_count(None, &s), 2, "omitted: minCapacity");
        assert_eq!(initial_count(Some(1), &s), 2);
        assert_eq!(initial_count(Some(5), &s), 5);
        assert_eq!(initial_count(Some(40), &s), 10);
    }

    #[test]
    fn a_scaler_owns_the_count_after_create() {
        let mut spec = EcsServiceSpec {
            desired_count: Some(40),
            auto_scaling: Some(scaling()),
            ..Default::default()
        };
        assert_eq!(spec_for_ecs(&spec, true, false).desired_count, Some(10));
        assert_eq!(spec_for_ecs(&spec, false, false).desired_count, None);
        assert_eq!(count_owner(&spec, false), CountOwner::AutoScaling);
        spec.auto_scaling = None;
        assert_eq!(spec_for_ecs(&spec, false, false).desired_count, Some(40));
        assert_eq!(count_owner(&spec, false), CountOwner::Spec);
        // A target registered elsewhere: never written, reported External.
        assert_eq!(spec_for_ecs(&spec, false, true).desired_count, None);
        assert_eq!(count_owner(&spec, true), CountOwner::External);
        spec.desired_count = None;
        assert_eq!(count_owner(&spec, false), CountOwner::Ecs);
    }

    #[test]
    fn a_new_scaling_registers_the_target_then_its_policies_and_actions() {
        let spec = scaling();
        let tags = BTreeMap::from([("ecs.operator.dev/uid".to_string(), "u1".to_string())]);
        let plan = plan(
            &desired(Some(&spec), false, &tags, None),
            &ObservedScaling::default(),
        );
        assert_eq!(
            writes(plan),
            vec![
                ScalingWrite::Register {
                    min_capacity: 2,
                    max_capacity: 10,
                    suspended: Suspended::default(),
                    tags,
                },
                ScalingWrite::PutPolicy(cpu(60.0)),
                ScalingWrite::PutAction(nightly()),
            ]
        );
    }

    #[test]
    fn in_sync_costs_no_write_and_defaults_ecs_fills_in_are_not_drift() {
        let spec = scaling();
        let previous = made(&spec);
        let none = BTreeMap::new();
        let plan = plan(
            &desired(Some(&spec), true, &none, Some(&previous)),
            &in_sync(&spec),
        );
        assert_eq!(
            plan,
            ScalingPlan::Apply {
                writes: vec![],
                changed: vec![]
            }
        );
    }

    #[test]
    fn each_change_sends_only_its_write() {
        let spec = scaling();
        let previous = made(&spec);
        let none = BTreeMap::new();
        let observed = in_sync(&spec);
        let plan_for = |spec: &AutoScaling| {
            plan(
                &desired(Some(spec), true, &none, Some(&previous)),
                &observed,
            )
        };

        let mut target_value = spec.clone();
        target_value.target_tracking[0].target_value = 70.0;
        assert_eq!(
            writes(plan_for(&target_value)),
            vec![ScalingWrite::PutPolicy(cpu(70.0))]
        );

        let mut cooldown = spec.clone();
        cooldown.target_tracking[0].scale_in_cooldown = Some(60);
        assert!(matches!(
            writes(plan_for(&cooldown)).as_slice(),
            [ScalingWrite::PutPolicy(p)] if p.scale_in_cooldown == Some(60)
        ));

        let mut range = spec.clone();
        range.max_capacity = 20;
        let ScalingPlan::Apply {
            writes: sent,
            changed,
        } = plan_for(&range)
        else {
            panic!("expected writes");
        };
        assert_eq!(changed, vec!["autoScaling.maxCapacity"]);
        assert!(matches!(
            sent.as_slice(),
            [ScalingWrite::Register { max_capacity: 20, tags, .. }] if tags.is_empty()
        ));

        let mut paused = spec.clone();
        paused.suspended = Some(Suspended {
            scheduled_scaling: true,
            ..Default::default()
        });
        assert!(matches!(
            writes(plan_for(&paused)).as_slice(),
            [ScalingWrite::Register { suspended, .. }] if suspended.scheduled_scaling
        ));

        let mut schedule = spec.clone();
        schedule.scheduled[0].schedule = "cron(0 23 * * ? *)".into();
        assert!(matches!(
            writes(plan_for(&schedule)).as_slice(),
            [ScalingWrite::PutAction(a)] if a.schedule == "cron(0 23 * * ? *)"
        ));
    }

    #[test]
    fn only_what_the_operator_made_is_removed() {
        let spec = scaling();
        let previous = made(&spec);
        let none = BTreeMap::new();
        let mut observed = in_sync(&spec);
        // Someone else's policy and action on the same target.
        let mut theirs = cpu(50.0);
        theirs.name = "theirs".into();
        observed.policies.push(stored(&theirs));
        let mut their_action = nightly();
        their_action.name = "their-action".into();
        observed.actions.push(their_action);
        let mut dropped = spec.clone();
        dropped.target_tracking.clear();
        dropped.scheduled.clear();
        let plan = plan(
            &desired(Some(&dropped), true, &none, Some(&previous)),
            &observed,
        );
        assert_eq!(
            writes(plan),
            vec![
                ScalingWrite::DeletePolicy("cpu".into()),
                ScalingWrite::DeleteAction("nightly".into()),
            ]
        );
    }

    #[test]
    fn removing_auto_scaling_deregisters_only_an_owned_target() {
        let spec = scaling();
        let previous = made(&spec);
        let none = BTreeMap::new();
        let observed = in_sync(&spec);
        assert_eq!(
            writes(plan(
                &desired(None, true, &none, Some(&previous)),
                &observed
            )),
            vec![ScalingWrite::Deregister]
        );
        assert_eq!(
            plan(&desired(None, false, &none, None), &observed),
            ScalingPlan::External
        );
        assert_eq!(
            plan(
                &desired(None, false, &none, None),
                &ObservedScaling::default()
            ),
            ScalingPlan::Unscaled
        );
    }

    #[test]
    fn a_foreign_target_is_adopted_only_when_asked() {
        let spec = scaling();
        let none = BTreeMap::new();
        let mut observed = in_sync(&spec);
        observed.target = Some(target(1, 4));
        let refused = plan(&desired(Some(&spec), false, &none, None), &observed);
        let ScalingPlan::Refuse(health) = refused else {
            panic!("expected a refusal, got {refused:?}");
        };
        assert_eq!(health.reason(), &Reason::NotOwned);
        assert!(
            health.message().contains("adoptExisting"),
            "{}",
            health.message()
        );
        let mut adopting = desired(Some(&spec), false, &none, None);
        adopting.adopt = true;
        assert!(matches!(
            writes(plan(&adopting, &observed)).as_slice(),
            [ScalingWrite::Register { min_capacity: 2, max_capacity: 10, tags, .. }] if tags.is_empty()
        ));
    }

    fn step(alarm: &str) -> StepScalingPolicy {
        use crate::api::service_scaling::{AdjustmentType, StepAdjustment};
        StepScalingPolicy {
            name: "queue".into(),
            alarm_name: alarm.into(),
            adjustment_type: AdjustmentType::ChangeInCapacity,
            steps: vec![StepAdjustment {
                metric_interval_lower_bound: Some(0.0),
                metric_interval_upper_bound: None,
                scaling_adjustment: 2,
            }],
            cooldown: Some(120),
            ..Default::default()
        }
    }

    fn stored_step(p: &StepScalingPolicy) -> ObservedPolicy {
        let mut have = p.clone();
        have.alarm_name = String::new();
        ObservedPolicy {
            name: p.name.clone(),
            type_: STEP_SCALING.into(),
            arn: format!("arn:policy/{}", p.name),
            alarms: vec![],
            target_tracking: None,
            step: Some(have),
        }
    }

    #[test]
    fn a_step_policy_is_put_then_attached_to_its_alarm_once() {
        let mut spec = scaling();
        spec.step_scaling = vec![step("queue-deep")];
        let previous = made(&scaling());
        let none = BTreeMap::new();
        let mut observed = in_sync(&scaling());
        observed
            .alarm_actions
            .insert("queue-deep".into(), vec!["arn:sns:page-me".into()]);
        let owned = desired(Some(&spec), true, &none, Some(&previous));
        assert_eq!(
            writes(plan(&owned, &observed)),
            vec![
                ScalingWrite::PutStepPolicy(step("queue-deep")),
                ScalingWrite::AttachAlarm {
                    policy: "queue".into(),
                    alarm: "queue-deep".into()
                },
            ]
        );
        // Put and attached: nothing more, and status lists the alarm.
        observed.policies.push(stored_step(&spec.step_scaling[0]));
        observed.alarm_actions.insert(
            "queue-deep".into(),
            vec!["arn:sns:page-me".into(), "arn:policy/queue".into()],
        );
        assert!(writes(plan(&owned, &observed)).is_empty());
        let status = status(&owned, ID, &observed).expect("a target");
        let queue = status
            .policies
            .iter()
            .find(|p| p.name == "queue")
            .expect("listed");
        assert_eq!(queue.alarms, vec!["queue-deep"]);
        assert!(queue.managed);
        // A changed step is one put; the alarm is not touched again.
        let mut bigger = spec.clone();
        bigger.step_scaling[0].steps[0].scaling_adjustment = 3;
        let owned = desired(Some(&bigger), true, &none, Some(&previous));
        assert!(matches!(
            writes(plan(&owned, &observed)).as_slice(),
            [ScalingWrite::PutStepPolicy(p)] if p.steps[0].scaling_adjustment == 3
        ));
    }

    #[test]
    fn a_missing_alarm_waits_and_a_dropped_step_policy_leaves_its_alarm_first() {
        let mut spec = scaling();
        spec.step_scaling = vec![step("queue-deep")];
        let observed = in_sync(&scaling());
        assert_eq!(missing_alarms(Some(&spec), &observed), vec!["queue-deep"]);
        // The policy was made and attached; now the spec drops it.
        let mut attached = in_sync(&scaling());
        attached.policies.push(stored_step(&spec.step_scaling[0]));
        attached.alarm_actions.insert(
            "queue-deep".into(),
            vec!["arn:sns:page-me".into(), "arn:policy/queue".into()],
        );
        let none = BTreeMap::new();
        let previous =
            status(&desired(Some(&spec), true, &none, None), ID, &attached).expect("a target");
        assert_eq!(
            alarms_to_read(Some(&scaling()), Some(&previous)),
            vec!["queue-deep"]
        );
        let dropped = scaling();
        assert_eq!(
            writes(plan(
                &desired(Some(&dropped), true, &none, Some(&previous)),
                &attached
            )),
            vec![
                ScalingWrite::DetachAlarm {
                    policy: "queue".into(),
                    alarm: "queue-deep".into()
                },
                ScalingWrite::DeletePolicy("queue".into()),
            ]
        );
        // Moved to another alarm: released from the old, attached to the new.
        let mut moved = spec.clone();
        moved.step_scaling[0].alarm_name = "queue-deeper".into();
        attached.alarm_actions.insert("queue-deeper".into(), vec![]);
        assert_eq!(
            writes(plan(
                &desired(Some(&moved), true, &none, Some(&previous)),
                &attached
            )),
            vec![
                ScalingWrite::DetachAlarm {
                    policy: "queue".into(),
                    alarm: "queue-deep".into()
                },
                ScalingWrite::AttachAlarm {
                    policy: "queue".into(),
                    alarm: "queue-deeper".into()
                },
            ]
        );
    }

    #[test]
    fn status_marks_what_the_spec_manages() {
        let spec = scaling();
        let mut observed = in_sync(&spec);
        let mut theirs = cpu(50.0);
        theirs.name = "theirs".into();
        observed.policies.push(stored(&theirs));
        let none = BTreeMap::new();
        let status =
            status(&desired(Some(&spec), true, &none, None), ID, &observed).expect("a target");
        assert!(status.managed);
        assert_eq!(
            (status.min_capacity, status.max_capacity),
            (Some(2), Some(10))
        );
        let managed: Vec<(&str, bool)> = status
            .policies
            .iter()
            .map(|p| (p.name.as_str(), p.managed))
            .collect();
        assert_eq!(managed, vec![("cpu", true), ("theirs", false)]);
        assert_eq!(status.policies[0].alarms.len(), 1);
        assert!(status.scheduled_actions[0].managed);
        // An external target: reported, nothing managed.
        let external =
            super::status(&desired(None, false, &none, None), ID, &observed).expect("a target");
        assert!(!external.managed);
        assert!(external.policies.iter().all(|p| !p.managed));
    }
}
