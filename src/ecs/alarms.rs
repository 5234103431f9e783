//! CloudWatch alarms that run step scaling policies. The alarms belong to whoever
//! made them: the operator reads them and changes only their alarm actions (adds or
//! removes the ARN of a policy it made), re-sending every other setting as it is.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::types::MetricAlarm;

use super::{Category, EcsApi};
use crate::error::Error;

/// DescribeAlarms takes at most 100 alarm names a call.
const ALARMS_PER_CALL: usize = 100;

impl EcsApi {
    /// The CloudWatch client (`with_cloudwatch`).
    pub fn cloudwatch(&self) -> Result<&aws_sdk_cloudwatch::Client, Error> {
        self.cloudwatch
            .as_ref()
            .ok_or_else(|| Error::Internal("no CloudWatch client configured".into()))
    }
}

/// The metric alarms of these names that exist, by name.
pub async fn describe(
    api: &EcsApi,
    names: &[String],
) -> Result<BTreeMap<String, MetricAlarm>, Error> {
    let client = api.cloudwatch()?;
    let mut found = BTreeMap::new();
    for chunk in names.chunks(ALARMS_PER_CALL) {
        let mut token = None;
        loop {
            let resp = api
                .call(
                    "DescribeAlarms",
                    Category::AutoScaling,
                    client
                        .describe_alarms()
                        .set_alarm_names(Some(chunk.to_vec()))
                        .set_next_token(token.take())
                        .send(),
                )
                .await?;
            for alarm in resp.metric_alarms() {
                if let Some(name) = alarm.alarm_name() {
                    found.insert(name.to_string(), alarm.clone());
                }
            }
            match resp.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => break,
            }
        }
    }
    Ok(found)
}

/// The alarm actions of the alarms of these names that exist (none named: no call).
pub async fn actions_of(
    api: &EcsApi,
    names: &[String],
) -> Result<BTreeMap<String, Vec<String>>, Error> {
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    Ok(describe(api, names)
        .await?
        .into_iter()
        .map(|(name, alarm)| (name, alarm.alarm_actions().to_vec()))
        .collect())
}

/// PutMetricAlarm with `actions` as the alarm actions and everything else as the
/// alarm has it (PutMetricAlarm replaces the whole alarm: a setting left out would
/// be reset).
pub async fn set_actions(
    api: &EcsApi,
    alarm: &MetricAlarm,
    actions: Vec<String>,
) -> Result<(), Error> {
    let client = api.cloudwatch()?;
    let nonempty = |v: &[String]| (!v.is_empty()).then(|| v.to_vec());
    let send = client
        .put_metric_alarm()
        .set_alarm_name(alarm.alarm_name().map(str::to_string))
        .set_alarm_description(alarm.alarm_description().map(str::to_string))
        .set_actions_enabled(alarm.actions_enabled())
        .set_ok_actions(nonempty(alarm.ok_actions()))
        .set_alarm_actions(Some(actions))
        .set_insufficient_data_actions(nonempty(alarm.insufficient_data_actions()))
        .set_metric_name(alarm.metric_name().map(str::to_string))
        .set_namespace(alarm.namespace().map(str::to_string))
        .set_statistic(alarm.statistic().cloned())
        .set_extended_statistic(alarm.extended_statistic().map(str::to_string))
        .set_dimensions((!alarm.dimensions().is_empty()).then(|| alarm.dimensions().to_vec()))
        .set_period(alarm.period())
        .set_unit(alarm.unit().cloned())
        .set_evaluation_periods(alarm.evaluation_periods())
        .set_datapoints_to_alarm(alarm.datapoints_to_alarm())
        .set_threshold(alarm.threshold())
        .set_comparison_operator(alarm.comparison_operator().cloned())
        .set_treat_missing_data(alarm.treat_missing_data().map(str::to_string))
        .set_evaluate_low_sample_count_percentile(
            alarm
                .evaluate_low_sample_count_percentile()
                .map(str::to_string),
        )
        .set_metrics((!alarm.metrics().is_empty()).then(|| alarm.metrics().to_vec()))
        .set_threshold_metric_id(alarm.threshold_metric_id().map(str::to_string))
        .set_evaluation_window(alarm.evaluation_window().cloned())
        .set_warm_up_configuration(alarm.warm_up_configuration().cloned())
        .set_evaluation_criteria(alarm.evaluation_criteria().cloned())
        .set_evaluation_interval(alarm.evaluation_interval())
        .set_action_configuration(alarm.action_configuration().cloned())
        .send();
    api.call("PutMetricAlarm", Category::AutoScaling, send)
        .await
        .map(drop)
}
