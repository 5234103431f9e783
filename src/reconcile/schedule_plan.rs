//! Pure scheduling for `EcsScheduledTask`, with the clock passed in: cron parsing,
//! time zones, CronJob's missed-slot rules, concurrency policy, history pruning.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp, Zoned};

use crate::api::scheduled_task::ConcurrencyPolicy;

/// More missed slots than this get a warning (as CronJob does); still only the
/// latest one runs.
pub const TOO_MANY_MISSED: usize = 100;

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
}

/// The five cron fields with their ranges, for messages a person can act on.
const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

/// Names the field and range an invalid schedule breaks (croner's own message,
/// e.g. "Component error: Number out of bounds.", names neither).
fn explain_invalid(expr: &str, parser_error: &str) -> String {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let shape = "five fields: minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, \
                 day-of-week 0-7 (0 and 7 are Sunday), or a macro such as @daily";
    if fields.len() == 5 {
        for (field, (name, min, max)) in fields.iter().zip(FIELDS) {
            let numbers = field
                .split([',', '-', '/'])
                .filter_map(|n| n.parse::<u32>().ok());
            // A step (`*/90`) is a count, not a value, but is as wrong past the range.
            if let Some(bad) = numbers.into_iter().find(|n| *n < min || *n > max) {
                return format!(
                    "invalid spec.schedule {expr:?}: the {name} field has {bad}, outside \
                     {min}-{max}"
                );
            }
        }
    } else if !expr.trim_start().starts_with('@') {
        return format!(
            "invalid spec.schedule {expr:?}: it has {} field(s); cron needs {shape}",
            fields.len()
        );
    }
    format!("invalid spec.schedule {expr:?} ({parser_error}); cron needs {shape}")
}

impl Schedule {
    pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<Schedule, String> {
        let tz = match time_zone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| {
                format!("unknown time zone {name:?} (use an IANA name such as Europe/Berlin)")
            })?,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            // croner knows every macro but @midnight.
            .parse(match expr.trim() {
                m if m.eq_ignore_ascii_case("@midnight") => "0 0 * * *",
                other => other,
            })
            .map_err(|e| explain_invalid(expr, &e.to_string()))?;
        Ok(Schedule { cron, tz })
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let z = t.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&z, false)
            .ok()
            .map(|z: Zoned| z.timestamp())
    }

    /// The latest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let z = t.to_zoned(self.tz.clone());
        self.cron
            .find_previous_occurrence(&z, true)
            .ok()
            .map(|z: Zoned| z.timestamp())
    }
}

/// What the schedule asks for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Nothing due; the next slot.
    Wait { next: Option<Timestamp> },
    /// Run the slot `slot`; `missed` older slots are skipped (never a burst).
    Run {
        slot: Timestamp,
        missed: usize,
        next: Option<Timestamp>,
    },
}

/// CronJob's rule: consider slots after the last scheduled time (or creation),
/// but no earlier than now - startingDeadlineSeconds (older slots are skipped);
/// run only the most recent.
pub fn due(
    s: &Schedule,
    last_scheduled: Option<Timestamp>,
    created: Timestamp,
    now: Timestamp,
    starting_deadline_seconds: Option<i64>,
) -> Due {
    let next = s.next_after(now);
    let mut earliest = last_scheduled.unwrap_or(created);
    if let Some(d) = starting_deadline_seconds
        && let Ok(floor) = now.checked_sub(SignedDuration::from_secs(d))
        && floor > earliest
    {
        earliest = floor;
    }
    let Some(latest) = s.latest_at_or_before(now).filter(|l| *l > earliest) else {
        return Due::Wait { next };
    };
    // Count the skipped slots, up to the warning threshold.
    let mut missed = 0;
    let mut t = earliest;
    while let Some(n) = s.next_after(t) {
        if n >= latest || missed > TOO_MANY_MISSED {
            break;
        }
        missed += 1;
        t = n;
    }
    Due::Run {
        slot: latest,
        missed,
        next,
    }
}

/// The run for a slot is named after the slot's minute, so two operators (or one
/// restarted) create the same name and the API server refuses the second.
pub fn run_name(schedule_name: &str, slot: Timestamp) -> String {
    let minutes = slot.as_second().div_euclid(60);
    let suffix = format!("-{minutes}");
    let mut base: String = schedule_name.to_string();
    base.truncate(253 - suffix.len());
    format!("{base}{suffix}")
}

/// What to do about active runs when a new one is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concurrency {
    Start,
    /// Forbid: skip while something runs.
    Skip,
    /// Replace: delete these active runs first.
    ReplaceThen(Vec<String>),
}

pub fn concurrency(policy: ConcurrencyPolicy, active: &[String]) -> Concurrency {
    match policy {
        _ if active.is_empty() => Concurrency::Start,
        ConcurrencyPolicy::Allow => Concurrency::Start,
        ConcurrencyPolicy::Forbid => Concurrency::Skip,
        ConcurrencyPolicy::Replace => Concurrency::ReplaceThen(active.to_vec()),
    }
}

/// Finished runs to delete: the oldest beyond each history limit. Input: (name,
/// succeeded, sort key), any order.
pub fn prune_history(
    finished: &[(String, bool, Timestamp)],
    successful_limit: i32,
    failed_limit: i32,
) -> Vec<String> {
    let mut out = Vec::new();
    for (want_success, limit) in [(true, successful_limit), (false, failed_limit)] {
        let mut runs: Vec<&(String, bool, Timestamp)> =
            finished.iter().filter(|r| r.1 == want_success).collect();
        runs.sort_by_key(|r| std::cmp::Reverse(r.2));
        let keep = usize::try_from(limit.max(0)).unwrap_or(0);
        out.extend(runs.into_iter().skip(keep).map(|r| r.0.clone()));
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn schedules_parse_or_say_why_not() {
        for ok in [
            "* * * * *",
            "*/15 * * * *",
            "30 2 * * 1-5",
            "0 0 1 * *",
            "@hourly",
            "@daily",
            "@midnight",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
            "0 9 * * MON",
        ] {
            assert!(Schedule::parse(ok, None).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "* * * *",
            "0 * * * * *",
            "61 * * * *",
            "* 25 * * *",
            "nonsense",
        ] {
            let e = Schedule::parse(bad, None).unwrap_err();
            assert!(e.contains("invalid spec.schedule"), "{bad}: {e}");
        }
        let e = Schedule::parse("61 * * * *", None).unwrap_err();
        assert!(
            e.contains("spec.schedule") && e.contains("minute field has 61, outside 0-59"),
            "{e}"
        );
        let e = Schedule::parse("* 25 * * *", None).unwrap_err();
        assert!(e.contains("hour field has 25, outside 0-23"), "{e}");
        let e = Schedule::parse("0 * * * * *", None).unwrap_err();
        assert!(e.contains("has 6 field(s)"), "{e}");
        let e = Schedule::parse("@daily", Some("Mars/Olympus")).unwrap_err();
        assert!(e.contains("unknown time zone"), "{e}");
    }

    #[test]
    fn next_slots_in_utc_and_in_a_time_zone() {
        let cases = [
            (
                "*/15 * * * *",
                None,
                "2026-03-01T10:07:00Z",
                "2026-03-01T10:15:00Z",
            ),
            (
                "@hourly",
                None,
                "2026-03-01T10:00:00Z",
                "2026-03-01T11:00:00Z",
            ),
            (
                "0 9 * * *",
                Some("Europe/Berlin"),
                "2026-01-15T12:00:00Z",
                "2026-01-16T08:00:00Z",
            ),
            (
                "0 9 * * *",
                Some("Europe/Berlin"),
                "2026-07-15T12:00:00Z",
                "2026-07-16T07:00:00Z",
            ),
            (
                "0 9 * * *",
                Some("America/New_York"),
                "2026-01-15T12:00:00Z",
                "2026-01-15T14:00:00Z",
            ),
        ];
        for (expr, tz, now, want) in cases {
            let s = Schedule::parse(expr, tz).unwrap();
            assert_eq!(
                s.next_after(at(now)),
                Some(at(want)),
                "{expr} {tz:?} after {now}"
            );
        }
    }

    #[test]
    fn daylight_saving_changes_run_each_day_once() {
        // Europe/Berlin: 2026-03-29 02:00 -> 03:00 (02:30 does not exist);
        // 2026-10-25 03:00 -> 02:00 (02:30 happens twice).
        let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        let mut t = at("2026-03-27T12:00:00Z");
        let mut slots = Vec::new();
        while t < at("2026-03-31T12:00:00Z") {
            t = s.next_after(t).unwrap();
            slots.push(t);
        }
        slots.pop();
        // One slot per day, none lost to the gap.
        assert_eq!(slots.len(), 4, "{slots:?}");
        let mut t = at("2026-10-24T12:00:00Z");
        let mut fall = Vec::new();
        while t < at("2026-10-26T12:00:00Z") {
            t = s.next_after(t).unwrap();
            fall.push(t);
        }
        fall.pop();
        assert_eq!(
            fall.len(),
            2,
            "02:30 repeated by the fall-back ran twice: {fall:?}"
        );
    }

    #[test]
    fn the_repeated_hour_of_a_fall_back_is_one_slot() {
        let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        // Last run Saturday 02:30 CEST; now Sunday 03:00 CET, after 02:30 came twice.
        let last = Some(at("2026-10-24T00:30:00Z"));
        match due(
            &s,
            last,
            at("2026-10-01T00:00:00Z"),
            at("2026-10-25T02:00:00Z"),
            None,
        ) {
            Due::Run { missed, .. } => assert_eq!(missed, 0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missed_slots_follow_cronjob_rules() {
        let s = Schedule::parse("*/10 * * * *", None).unwrap();
        let created = at("2026-03-01T10:05:00Z");
        // Before the first slot: wait for it.
        assert_eq!(
            due(&s, None, created, at("2026-03-01T10:07:00Z"), None),
            Due::Wait {
                next: Some(at("2026-03-01T10:10:00Z"))
            }
        );
        // Right at the slot: run it.
        assert!(matches!(
            due(&s, None, created, at("2026-03-01T10:10:00Z"), None),
            Due::Run { slot, missed: 0, .. } if slot == at("2026-03-01T10:10:00Z")
        ));
        // Already ran that slot: wait.
        assert!(matches!(
            due(
                &s,
                Some(at("2026-03-01T10:10:00Z")),
                created,
                at("2026-03-01T10:15:00Z"),
                None
            ),
            Due::Wait { .. }
        ));
        // Operator down for an hour: one run for the latest slot, 5 skipped.
        assert_eq!(
            due(
                &s,
                Some(at("2026-03-01T10:10:00Z")),
                created,
                at("2026-03-01T11:12:00Z"),
                None
            ),
            Due::Run {
                slot: at("2026-03-01T11:10:00Z"),
                missed: 5,
                next: Some(at("2026-03-01T11:20:00Z"))
            }
        );
        // With a starting deadline of 60 s, a slot 2 minutes old is skipped.
        assert!(matches!(
            due(
                &s,
                Some(at("2026-03-01T10:10:00Z")),
                created,
                at("2026-03-01T11:12:00Z"),
                Some(60)
            ),
            Due::Wait { .. }
        ));
        assert!(matches!(
            due(
                &s,
                Some(at("2026-03-01T10:10:00Z")),
                created,
                at("2026-03-01T11:10:30Z"),
                Some(60)
            ),
            Due::Run { .. }
        ));
        // Down for weeks: still one run, and the count says "too many".
        match due(
            &s,
            Some(at("2026-01-01T00:00:00Z")),
            created,
            at("2026-03-01T11:12:00Z"),
            None,
        ) {
            Due::Run { missed, .. } => assert!(missed > TOO_MANY_MISSED),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn starting_deadline_bounds_how_late_a_slot_may_start() {
        let s = Schedule::parse("0 * * * *", None).unwrap();
        let created = at("2026-03-01T08:30:00Z");
        let last = Some(at("2026-03-01T09:00:00Z"));
        // 10:00 is 40 minutes old: past a 30 minute deadline, within a 60 minute one.
        assert!(matches!(
            due(&s, last, created, at("2026-03-01T10:40:00Z"), Some(1800)),
            Due::Wait { .. }
        ));
        assert!(matches!(
            due(&s, last, created, at("2026-03-01T10:40:00Z"), Some(3600)),
            Due::Run { slot, .. } if slot == at("2026-03-01T10:00:00Z")
        ));
    }

    #[test]
    fn run_names_are_per_minute_and_stable() {
        let slot = at("2026-03-01T10:10:00Z");
        assert_eq!(
            run_name("nightly", slot),
            format!("nightly-{}", slot.as_second() / 60)
        );
        assert_eq!(
            run_name("nightly", slot),
            run_name("nightly", at("2026-03-01T10:10:00Z"))
        );
        assert!(run_name(&"x".repeat(300), slot).len() <= 253);
    }

    #[test]
    fn concurrency_policies() {
        let active = vec!["a".to_string()];
        assert_eq!(
            concurrency(ConcurrencyPolicy::Forbid, &[]),
            Concurrency::Start
        );
        assert_eq!(
            concurrency(ConcurrencyPolicy::Allow, &active),
            Concurrency::Start
        );
        assert_eq!(
            concurrency(ConcurrencyPolicy::Forbid, &active),
            Concurrency::Skip
        );
        assert_eq!(
            concurrency(ConcurrencyPolicy::Replace, &active),
            Concurrency::ReplaceThen(active.clone())
        );
    }

    #[test]
    fn history_keeps_the_newest_per_outcome() {
        let t = |m: i64| Timestamp::from_second(m * 60).unwrap();
        let finished = vec![
            ("s1".to_string(), true, t(1)),
            ("s2".to_string(), true, t(2)),
            ("s3".to_string(), true, t(3)),
            ("s4".to_string(), true, t(4)),
            ("f1".to_string(), false, t(5)),
            ("f2".to_string(), false, t(6)),
        ];
        assert_eq!(prune_history(&finished, 3, 1), vec!["f1", "s1"]);
        assert_eq!(prune_history(&finished, 0, 0).len(), 6);
        assert!(prune_history(&finished, 10, 10).is_empty());
    }
}
