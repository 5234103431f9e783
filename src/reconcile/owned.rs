//! What every ECS-backed kind does the same way: who holds an ECS object
//! (ownership tags, adoption, own history), which tags to set and remove, what
//! deletion does with an object, and the UpdateNotApplied guard.
//!
//! The rules are pure functions with table tests; the one read they need (which
//! resources of the kind exist) is done by [`judge`], and only when the tags name
//! a resource other than this one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use kube::ResourceExt;

use super::{Context, Managed, Note, living_uids};
use crate::api::common::{DeletionPolicy, Health, OWNER_TAG, Reason, UID_TAG, owner_tag_value};
use crate::error::Error;

/// The resource asking for an ECS object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    /// Its Kubernetes kind, for messages (`EcsService`).
    pub kind: &'static str,
    pub uid: String,
    /// Its owner tag value (`<namespace>/<name>`, see `ownership_tags`).
    pub owner: String,
    /// spec.adoptExisting.
    pub adopt_existing: bool,
}

impl Claimant {
    pub fn of<K: Managed>(obj: &K, adopt_existing: bool) -> Result<Claimant, Error> {
        let ns = obj.namespace().unwrap_or_default();
        let uid = obj.uid().ok_or_else(|| {
            Error::Internal(format!("{} {ns}/{} has no uid", K::KIND, obj.name_any()))
        })?;
        Ok(Claimant {
            kind: K::KIND,
            uid,
            owner: owner_tag_value(&ns, &obj.name_any()),
            adopt_existing,
        })
    }
}

/// How a resource stands to an existing ECS object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Tagged with this resource's uid.
    Ours,
    /// Not ours yet; the resource takes it over (and tags it).
    Adopt(Adoption),
    /// Never touched.
    Refuse(Holder),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// spec.adoptExisting, for an object no existing resource owns.
    Requested,
    /// Under this resource's owner tag with the uid of a resource that is gone: an
    /// earlier resource of the same namespace and name made it (GitOps delete and
    /// re-create), so it is this resource's own history, adoptExisting or not.
    OwnHistory,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Another existing resource of the kind (its owner tag value). Two owners would
    /// fight over the object and deleting either would delete it, so not even
    /// adoptExisting takes it.
    Living(String),
    /// Untagged, or tagged by a resource that no longer exists: adoptExisting takes it.
    Unclaimed { owner: Option<String> },
}

/// True if the tags name a resource other than `uid` (only then does the claim
/// depend on which resources exist).
pub fn names_another(tags: &BTreeMap<String, String>, uid: &str) -> bool {
    tags.get(UID_TAG).is_some_and(|u| u != uid)
}

/// The claim on an object with `tags`. `living` are the uids of the kind's existing
/// resources; it is read only when [`names_another`] is true (None otherwise).
pub fn claim(
    tags: &BTreeMap<String, String>,
    me: &Claimant,
    living: Option<&BTreeSet<String>>,
) -> Claim {
    let owner = tags.get(OWNER_TAG).cloned();
    match tags.get(UID_TAG) {
        Some(uid) if *uid == me.uid => Claim::Ours,
        Some(uid) if living.is_none_or(|l| l.contains(uid)) => {
            Claim::Refuse(Holder::Living(owner.unwrap_or_else(|| uid.clone())))
        }
        Some(_) if owner.as_deref() == Some(me.owner.as_str()) => {
            Claim::Adopt(Adoption::OwnHistory)
        }
        _ if me.adopt_existing => Claim::Adopt(Adoption::Requested),
        _ => Claim::Refuse(Holder::Unclaimed { owner }),
    }
}

/// The uids of the kind's existing resources, read only when an observed object's
/// tags name a resource other than `uid` (see [`claim`]).
pub async fn living_for<K: Managed>(
    ctx: &Context,
    tags: Option<&BTreeMap<String, String>>,
    uid: &str,
) -> Result<Option<BTreeSet<String>>, Error> {
    match tags {
        Some(t) if names_another(t, uid) => Ok(Some(living_uids::<K>(ctx).await?)),
        _ => Ok(None),
    }
}

/// The Stalled health for a refused claim. `what` names the ECS object
/// (`ECS cluster web`); `name_field` is the spec field that picks another one.
pub fn refusal(holder: &Holder, me: &Claimant, what: &str, name_field: &str) -> Health {
    let kind = me.kind;
    let message = match holder {
        Holder::Living(owner) => format!(
            "{what} is managed by {kind} {owner}; the operator will not touch it, and \
             adoptExisting only takes over objects no existing {kind} owns. Delete that resource \
             with deletionPolicy: Orphan (or remove its ecs.operator.dev/* tags) first, or choose \
             another {name_field}"
        ),
        Holder::Unclaimed { owner } => {
            let held = match owner {
                Some(o) => format!("it is tagged as owned by {o}, which no longer exists"),
                None => "it was not created by ecs-operator".to_string(),
            };
            format!(
                "{what} already exists and {held}; the operator will not touch it. Set \
                 spec.adoptExisting: true to manage it, or choose another {name_field}"
            )
        }
    };
    Health::stalled(Reason::NotOwned, message)
}

/// [`claim`] as a plan uses it: `Ok(None)` ours, `Ok(Some(how))` to adopt, `Err` the
/// Stalled health of a refusal. `what` names the ECS object, `name_field` the spec
/// field that picks another one.
pub fn adoption(
    tags: &BTreeMap<String, String>,
    me: &Claimant,
    living: Option<&BTreeSet<String>>,
    what: &str,
    name_field: &str,
) -> Result<Option<Adoption>, Health> {
    match claim(tags, me, living) {
        Claim::Ours => Ok(None),
        Claim::Adopt(how) => Ok(Some(how)),
        Claim::Refuse(holder) => Err(refusal(&holder, me, what, name_field)),
    }
}

/// The Warning Event for a refused claim.
pub fn not_owned_note(health: &Health, action: &'static str) -> Note {
    Note::warning(Reason::NotOwned, action, health.message())
}

/// The Event for an adoption.
pub fn adopted_note(what: &str, how: Adoption, kind: &str) -> Note {
    let why = match how {
        Adoption::Requested => "(adoptExisting)".to_string(),
        Adoption::OwnHistory => {
            format!("left by an earlier {kind} of this name that was deleted")
        }
    };
    Note::normal(
        Reason::Adopted,
        "TagResource",
        format!("adopted existing {what} {why}"),
    )
}

/// Tags to set and remove on an ECS object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagChanges {
    pub tag: BTreeMap<String, String>,
    pub untag: Vec<String>,
    /// `tags[key]` for each spec tag set or removed (the ownership tags are not
    /// spec fields and are left out).
    pub changed: Vec<String>,
}

impl TagChanges {
    pub fn is_empty(&self) -> bool {
        self.tag.is_empty() && self.untag.is_empty()
    }
}

/// Sets what differs from `want` (spec tags plus ownership tags); removes only keys
/// this resource applied before (`managed`: status.managedTagKeys) that the spec
/// dropped, never anyone else's tags and never the ownership tags.
pub fn tag_changes(
    want: &BTreeMap<String, String>,
    observed: &BTreeMap<String, String>,
    managed: &[String],
) -> TagChanges {
    let is_ownership = |k: &str| k == OWNER_TAG || k == UID_TAG;
    let mut changes = TagChanges::default();
    for (k, v) in want {
        if observed.get(k) != Some(v) {
            changes.tag.insert(k.clone(), v.clone());
            if !is_ownership(k) {
                changes.changed.push(format!("tags[{k}]"));
            }
        }
    }
    for k in managed {
        if !want.contains_key(k) && observed.contains_key(k) && !is_ownership(k) {
            changes.untag.push(k.clone());
            changes.changed.push(format!("tags[{k}]"));
        }
    }
    changes
}

/// What deletion does with an existing ECS object, before anything kind-specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// No such object (any more): nothing to do.
    Gone,
    /// Not this resource's: never deleted or untagged.
    NotOwned,
    /// deletionPolicy Orphan: keep it, remove the ownership tags.
    Orphan,
    /// deletionPolicy Delete on an object of ours.
    Delete,
}

impl Release {
    /// For the Event that says why deletion left an object alone.
    pub fn describe(&self) -> &'static str {
        match self {
            Release::Gone => "it is gone already",
            Release::NotOwned => "it is not this resource's",
            Release::Orphan => "deletionPolicy: Orphan",
            Release::Delete => "deleted",
        }
    }
}

pub fn release(
    tags: Option<&BTreeMap<String, String>>,
    uid: &str,
    policy: DeletionPolicy,
) -> Release {
    match tags {
        None => Release::Gone,
        Some(t) if t.get(UID_TAG).is_none_or(|u| u != uid) => Release::NotOwned,
        Some(_) if policy == DeletionPolicy::Orphan => Release::Orphan,
        Some(_) => Release::Delete,
    }
}

/// The ownership tag keys an orphaned object loses.
pub fn ownership_keys() -> Vec<String> {
    vec![OWNER_TAG.to_string(), UID_TAG.to_string()]
}

/// Identical updates in a row before the operator stops repeating one ECS ignores.
pub const MAX_SAME_UPDATE: u32 = 3;

/// Remembers the last ECS write planned for each object, so that the same write
/// planned again and again (ECS does not take it, or reports it differently from
/// how it was sent) ends as `Stalled UpdateNotApplied` instead of a write per pass.
#[derive(Default)]
pub struct UpdateGuard {
    /// object key -> (fingerprint of the last write planned, times in a row).
    updates: Mutex<HashMap<String, (String, u32)>>,
}

impl UpdateGuard {
    /// Notes the write planned now (`None`: nothing to write, which resets the count).
    /// Err with the Stalled health once the same write is due more than
    /// `MAX_SAME_UPDATE` times in a row.
    pub fn check(
        &self,
        key: &str,
        fingerprint: Option<String>,
        what: &str,
        changed: &[String],
    ) -> Result<(), Health> {
        let mut all = self.updates.lock().unwrap_or_else(|e| e.into_inner());
        let Some(f) = fingerprint else {
            all.remove(key);
            return Ok(());
        };
        let entry = all.entry(key.to_string()).or_insert((f.clone(), 0));
        if entry.0 != f {
            *entry = (f, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 <= MAX_SAME_UPDATE {
            return Ok(());
        }
        Err(Health::stalled(
            Reason::UpdateNotApplied,
            format!(
                "{what} still differs from the spec after {MAX_SAME_UPDATE} identical updates \
                 ({}); not retrying until the spec or the ECS object changes",
                changed.join(", ")
            ),
        ))
    }

    /// `check` for a pass that plans `actions` (none: nothing to write). Err: the
    /// Stalled health and the Warning Event for `action`, the ECS call it stopped.
    pub fn check_actions<A: std::fmt::Debug>(
        &self,
        key: &str,
        actions: &[A],
        what: &str,
        changed: &[String],
        action: &'static str,
    ) -> Result<(), Box<(Health, Note)>> {
        let fingerprint = (!actions.is_empty()).then(|| format!("{actions:?}"));
        self.check(key, fingerprint, what, changed)
            .map_err(|health| {
                let note = not_applied_note(&health, action);
                Box::new((health, note))
            })
    }

    /// Forget an object (it is gone).
    pub fn forget(&self, key: &str) {
        self.updates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// The Warning Event for a write the guard stopped.
pub fn not_applied_note(health: &Health, action: &'static str) -> Note {
    Note::warning(Reason::UpdateNotApplied, action, health.message())
}

/// The Event for taking over an object: Adopted, naming the fields the pass changed.
pub fn adopted_changes_note(what: &str, how: Adoption, kind: &str, changed: &[String]) -> Note {
    let mut note = adopted_note(what, how, kind);
    note.message = format!("{}; changed: {}", note.message, changed.join(", "));
    note
}

/// How an update Event reads: DriftCorrected when the spec is the one already applied
/// (someone changed ECS), Updated when the spec changed.
pub fn update_wording(drift: bool) -> (Reason, &'static str) {
    if drift {
        (
            Reason::DriftCorrected,
            "had drifted from the spec; corrected",
        )
    } else {
        (Reason::Updated, "updated")
    }
}

/// The ownership table every kind's plan is tested against.
#[cfg(test)]
pub(crate) mod table {
    use super::*;
    use crate::api::common::ownership_tags;

    /// What a kind's plan must do with an existing object.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Expect {
        Ours,
        Adopt(Adoption),
        Refuse,
    }

    /// One row: the existing object's tags, spec.adoptExisting, the expectation.
    pub struct Row {
        pub tags: BTreeMap<String, String>,
        pub adopt_existing: bool,
        pub expect: Expect,
    }

    /// The uid of the resource under test (named `ns/<name>`).
    pub const UID: &str = "uid-1";

    /// The resources of the kind that exist: this one and another.
    pub fn living() -> BTreeSet<String> {
        BTreeSet::from([UID.to_string(), "uid-other".to_string()])
    }

    /// `living()` when the plan needs it (the tags name another resource).
    pub fn living_for(
        tags: &BTreeMap<String, String>,
        living: &BTreeSet<String>,
    ) -> Option<BTreeSet<String>> {
        names_another(tags, UID).then(|| living.clone())
    }

    pub fn rows(name: &str) -> Vec<Row> {
        let row = |tags, adopt_existing, expect| Row {
            tags,
            adopt_existing,
            expect,
        };
        let other = || ownership_tags("other", name, "uid-other");
        let gone_other = || ownership_tags("other", name, "uid-gone");
        vec![
            row(ownership_tags("ns", name, UID), false, Expect::Ours),
            row(BTreeMap::new(), false, Expect::Refuse),
            row(BTreeMap::new(), true, Expect::Adopt(Adoption::Requested)),
            // Another existing resource's object: never, adoptExisting or not.
            row(other(), false, Expect::Refuse),
            row(other(), true, Expect::Refuse),
            // A resource that is gone: adoptExisting takes its object.
            row(gone_other(), false, Expect::Refuse),
            row(gone_other(), true, Expect::Adopt(Adoption::Requested)),
            // This resource's own history: taken back without adoptExisting.
            row(
                ownership_tags("ns", name, "uid-gone"),
                false,
                Expect::Adopt(Adoption::OwnHistory),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::ownership_tags;

    fn me(adopt_existing: bool) -> Claimant {
        Claimant {
            kind: "EcsThing",
            uid: "me".into(),
            owner: "ns/web".into(),
            adopt_existing,
        }
    }

    #[test]
    fn the_same_update_stops_after_a_few_tries_and_resets_on_change() {
        let guard = UpdateGuard::default();
        let f = || Some("UpdateCluster{x}".to_string());
        for _ in 0..MAX_SAME_UPDATE {
            assert!(guard.check("k", f(), "ECS cluster c", &[]).is_ok());
        }
        let stalled = guard.check("k", f(), "ECS cluster c", &["settings".into()]);
        assert!(
            matches!(&stalled, Err(Health::Stalled { reason, .. }) if reason == "UpdateNotApplied")
        );
        // Another write, or nothing to write, starts the count again.
        assert!(guard.check("k", Some("other".into()), "c", &[]).is_ok());
        assert!(guard.check("k", None, "c", &[]).is_ok());
        for _ in 0..MAX_SAME_UPDATE {
            assert!(guard.check("k", f(), "c", &[]).is_ok());
        }
        // Objects do not share counts.
        assert!(guard.check("other", f(), "c", &[]).is_ok());
    }

    #[test]
    fn claims_follow_one_table() {
        let living = BTreeSet::from(["other-uid".to_string(), "me".to_string()]);
        let ours = ownership_tags("ns", "web", "me");
        let anothers = ownership_tags("ns", "api", "other-uid");
        let gone_other = ownership_tags("ns", "api", "gone-uid");
        let gone_mine = ownership_tags("ns", "web", "gone-uid");
        let foreign_tags = BTreeMap::from([("team".to_string(), "x".to_string())]);
        let unclaimed = |o: Option<&str>| {
            Claim::Refuse(Holder::Unclaimed {
                owner: o.map(Into::into),
            })
        };
        // (tags, adoptExisting, expected)
        let table: Vec<(&BTreeMap<String, String>, bool, Claim)> = vec![
            (&ours, false, Claim::Ours),
            (&ours, true, Claim::Ours),
            (&foreign_tags, false, unclaimed(None)),
            (&foreign_tags, true, Claim::Adopt(Adoption::Requested)),
            // Another existing resource's object: refused, adoptExisting or not.
            (
                &anothers,
                false,
                Claim::Refuse(Holder::Living("ns/api".into())),
            ),
            (
                &anothers,
                true,
                Claim::Refuse(Holder::Living("ns/api".into())),
            ),
            // A resource that is gone: adoptExisting takes its object.
            (&gone_other, false, unclaimed(Some("ns/api"))),
            (&gone_other, true, Claim::Adopt(Adoption::Requested)),
            // Own history: taken over without adoptExisting.
            (&gone_mine, false, Claim::Adopt(Adoption::OwnHistory)),
            (&gone_mine, true, Claim::Adopt(Adoption::OwnHistory)),
        ];
        for (tags, adopt, want) in table {
            let living = names_another(tags, "me").then_some(&living);
            assert_eq!(
                claim(tags, &me(adopt), living),
                want,
                "{tags:?} adopt={adopt}"
            );
        }
    }

    #[test]
    fn a_foreign_uid_is_never_adopted_without_knowing_who_lives() {
        let anothers = ownership_tags("ns", "api", "other-uid");
        assert!(matches!(
            claim(&anothers, &me(true), None),
            Claim::Refuse(Holder::Living(_))
        ));
    }

    #[test]
    fn refusals_say_what_would_help() {
        let living = refusal(
            &Holder::Living("ns/api".into()),
            &me(true),
            "ECS service web",
            "serviceName",
        );
        assert!(
            living.message().contains("managed by EcsThing ns/api"),
            "{}",
            living.message()
        );
        assert!(living.message().contains("deletionPolicy: Orphan"));
        let unclaimed = refusal(
            &Holder::Unclaimed { owner: None },
            &me(false),
            "ECS service web",
            "serviceName",
        );
        assert!(unclaimed.message().contains("adoptExisting: true"));
        assert!(unclaimed.message().contains("another serviceName"));
        assert!(matches!(unclaimed, Health::Stalled { reason, .. } if reason == "NotOwned"));
    }

    #[test]
    fn tags_are_set_where_they_differ_and_removed_only_when_ours() {
        let mut want = ownership_tags("ns", "web", "me");
        want.insert("team".into(), "a".into());
        let observed = BTreeMap::from([
            ("team".to_string(), "b".to_string()),
            ("old".to_string(), "1".to_string()),
            ("theirs".to_string(), "x".to_string()),
            (OWNER_TAG.to_string(), "ns/web".to_string()),
        ]);
        let managed = vec!["old".to_string(), "team".to_string(), UID_TAG.to_string()];
        let c = tag_changes(&want, &observed, &managed);
        assert_eq!(c.tag.get("team").map(String::as_str), Some("a"));
        assert_eq!(c.tag.get(UID_TAG).map(String::as_str), Some("me"));
        assert!(!c.tag.contains_key(OWNER_TAG));
        assert_eq!(c.untag, vec!["old".to_string()]);
        assert_eq!(
            c.changed,
            vec!["tags[team]".to_string(), "tags[old]".to_string()]
        );
        assert!(tag_changes(&want, &want, &managed).is_empty());
    }

    #[test]
    fn deletion_never_touches_what_is_not_ours() {
        let ours = ownership_tags("ns", "web", "me");
        let theirs = ownership_tags("ns", "web", "other");
        use DeletionPolicy::*;
        assert_eq!(release(None, "me", Delete), Release::Gone);
        assert_eq!(release(Some(&theirs), "me", Delete), Release::NotOwned);
        assert_eq!(release(Some(&theirs), "me", Orphan), Release::NotOwned);
        assert_eq!(
            release(Some(&BTreeMap::new()), "me", Delete),
            Release::NotOwned
        );
        assert_eq!(release(Some(&ours), "me", Orphan), Release::Orphan);
        assert_eq!(release(Some(&ours), "me", Delete), Release::Delete);
    }
}
