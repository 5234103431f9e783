//! The batched observer that keeps resyncs at ceil(N/10) DescribeServices per cluster.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{DESCRIBE_BATCH, ObservedService, ServiceState, cluster_name, describe};
use crate::ecs::EcsApi;
use crate::error::Error;

#[derive(Default)]
struct ClusterCache {
    /// Every service of this cluster some EcsService asked about: the peers a
    /// DescribeServices call is filled up with.
    known: BTreeSet<String>,
    /// name -> (when read, what was read; None = ECS does not have it).
    seen: HashMap<String, (Instant, Option<ObservedService>)>,
    /// name -> invalidations so far: a read that was in flight while we wrote must
    /// not be cached as if it saw the write.
    epoch: HashMap<String, u64>,
    /// Services whose last request wanted a copy fresher than the window (a rollout
    /// or an update under way): they fill the free places of other reads' calls.
    hot: BTreeSet<String>,
    /// name -> digest of the copy its last reconcile was given (see `sweep`).
    delivered: HashMap<String, u64>,
    /// name -> when its reconcile will next look (a poll after a create or update):
    /// a peer read is worth a place only if it serves that look.
    due: HashMap<String, Instant>,
}

/// A digest of a copy, to tell whether ECS changed since a reconcile saw it.
fn digest(obs: Option<&ObservedService>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    format!("{obs:?}").hash(&mut hasher);
    hasher.finish()
}

impl ClusterCache {
    /// Peers to read along with `name` in the places its call of 10 has left, which
    /// cost nothing extra, most useful first: services whose poll is due within
    /// `FRESH` (soonest first; a copy read now serves it), services with no copy
    /// (known from a restart), hot ones with a copy older than `FRESH`, then stale
    /// ones (older than `window`), oldest first. Never one due later (its copy would
    /// be too old by then) nor one ECS said it does not have (those not created yet
    /// are read 100 at once by `observe_new`). A reconcile's read is one call: the
    /// resync round is the sweep's.
    fn peers(&self, name: &str, window: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut ranked: Vec<(u8, i128, &String)> = self
            .known
            .iter()
            .filter(|n| n.as_str() != name)
            .filter_map(|n| {
                let copy = self.seen.get(n);
                if matches!(copy, Some((_, None))) {
                    return None;
                }
                let age = copy.map(|(at, _)| now.duration_since(*at));
                if age.is_some_and(|a| a <= FRESH) {
                    return None;
                }
                let millis = |d: Duration| i128::try_from(d.as_millis()).unwrap_or(i128::MAX);
                if let Some(due) = self.due.get(n) {
                    if *due > now + FRESH {
                        return None;
                    }
                    let overdue = now.saturating_duration_since(*due);
                    return Some((0, -millis(overdue), n));
                }
                match age {
                    None => Some((1, 0, n)),
                    Some(a) if self.hot.contains(n) => Some((2, -millis(a), n)),
                    Some(a) if a > window => Some((3, -millis(a), n)),
                    Some(_) => None,
                }
            })
            .collect();
        ranked.sort();
        ranked
            .into_iter()
            .take(DESCRIBE_BATCH - 1)
            .map(|(_, _, n)| n.clone())
            .collect()
    }
}

/// How many services one read for a never-created service covers: itself and
/// other never-created services of its cluster (10 calls of 10).
pub const NEW_SERVICES_READ: usize = 100;

/// How old a copy may be for a reconcile that needs the service as it is now (a
/// rollout, an update just sent): recent enough to judge progress, and old enough
/// that a peer's read a moment ago serves it.
pub const FRESH: Duration = Duration::from_secs(2);

/// Reads services through a short-lived cache shared by all EcsService reconciles.
///
/// A reconcile that needs a fresh read of its service also reads every other
/// known service of that cluster whose cached copy is stale, 10 per call; the
/// reconciles that follow in the same resync round find their copy fresh. With
/// resyncs aligned to the interval (see `reconcile::service`), one round of N
/// services in a cluster costs ceil(N/10) DescribeServices calls.
#[derive(Default)]
pub struct ServiceObserver {
    /// How old a peer's copy may be before a read for another service refreshes it.
    window: Duration,
    clusters: Mutex<HashMap<String, ClusterCache>>,
    /// One fetch per cluster at a time, so concurrent reconciles share it.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ServiceObserver {
    pub fn new(window: Duration) -> Self {
        ServiceObserver {
            window,
            ..Default::default()
        }
    }

    /// How old a copy may be for a routine (resync) read.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ClusterCache>> {
        self.clusters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn cached(
        &self,
        cluster: &str,
        name: &str,
        max_age: Duration,
    ) -> Option<Option<ObservedService>> {
        self.copy(cluster, name, max_age, false)
    }

    /// The copy of `name` if read within `max_age` (with `absent_ok`, also ECS's
    /// "no such service" at any age); `name` becomes a known peer either way.
    fn copy(
        &self,
        cluster: &str,
        name: &str,
        max_age: Duration,
        absent_ok: bool,
    ) -> Option<Option<ObservedService>> {
        let mut all = self.lock();
        let c = all.entry(cluster_name(cluster).to_string()).or_default();
        c.known.insert(name.to_string());
        match c.seen.get(name) {
            Some((_, None)) if absent_ok => Some(None),
            Some((at, obs)) if at.elapsed() <= max_age => Some(obs.clone()),
            _ => None,
        }
    }

    /// The service `name` in `cluster`, read no longer than `max_age` ago.
    pub async fn observe(
        &self,
        ecs: &EcsApi,
        cluster: &str,
        name: &str,
        max_age: Duration,
    ) -> Result<Option<ObservedService>, Error> {
        self.mark(cluster, name, max_age < self.window);
        if let Some(hit) = self.cached(cluster, name, max_age) {
            self.delivered(cluster, name, hit.as_ref());
            return Ok(hit);
        }
        let key = cluster_name(cluster).to_string();
        let gate = self.gate(cluster);
        let arrived = Instant::now();
        let _turn = gate.lock().await;
        // Someone else may have read it while we waited for our turn: good enough if
        // it is as fresh as we asked, or was requested after we arrived.
        if let Some(hit) = self.cached(cluster, name, max_age.max(arrived.elapsed())) {
            self.delivered(cluster, name, hit.as_ref());
            return Ok(hit);
        }
        let peers: Vec<String> = {
            let all = self.lock();
            all.get(&key)
                .map(|c| c.peers(name, self.window))
                .unwrap_or_default()
        };
        self.read_for(ecs, cluster, name, peers).await
    }

    /// The service `name` of an EcsService that never had one: whether ECS has it
    /// (adoption, a name taken, a create whose status write was lost). ECS saying
    /// "no such service" stays good until a write invalidates it, however old:
    /// acting on a stale answer costs a CreateService that ECS refuses (the name is
    /// taken: not idempotent), after which the copy is invalidated and read again.
    /// A miss reads `name` and up to `NEW_SERVICES_READ` of `pending` (the cluster's
    /// other never-created services) at once: 1,000 services applied together cost
    /// 100 reads, not 1,000.
    pub async fn observe_new(
        &self,
        ecs: &EcsApi,
        cluster: &str,
        name: &str,
        pending: impl FnOnce() -> Vec<String>,
    ) -> Result<Option<ObservedService>, Error> {
        self.mark(cluster, name, false);
        if let Some(hit) = self.copy(cluster, name, self.window, true) {
            return Ok(hit);
        }
        let gate = self.gate(cluster);
        let _turn = gate.lock().await;
        if let Some(hit) = self.copy(cluster, name, self.window, true) {
            return Ok(hit);
        }
        let unread: Vec<String> = {
            let all = self.lock();
            let seen = all.get(cluster_name(cluster)).map(|c| &c.seen);
            pending()
                .into_iter()
                .filter(|n| n != name && seen.is_none_or(|s| !s.contains_key(n)))
                .take(NEW_SERVICES_READ - 1)
                .collect()
        };
        self.know(cluster, &unread);
        self.read_for(ecs, cluster, name, unread).await
    }

    /// Reads `name` with `others` along; what a reconcile of `name` is given.
    async fn read_for(
        &self,
        ecs: &EcsApi,
        cluster: &str,
        name: &str,
        others: Vec<String>,
    ) -> Result<Option<ObservedService>, Error> {
        let mut wanted = vec![name.to_string()];
        wanted.extend(others);
        let mut result = None;
        self.read(ecs, cluster, &wanted, |n, obs| {
            if n == name {
                result = obs.cloned();
            }
        })
        .await?;
        self.delivered(cluster, name, result.as_ref());
        Ok(result)
    }

    /// Reads `names` (10 a call) into the cache and shows `answered` what ECS
    /// answered for each, a call at a time: a sweep over 5,000 services then holds
    /// digests, not a second copy of every service. The caller holds the cluster's
    /// fetch gate.
    async fn read(
        &self,
        ecs: &EcsApi,
        cluster: &str,
        names: &[String],
        mut answered: impl FnMut(&str, Option<&ObservedService>),
    ) -> Result<(), Error> {
        let key = cluster_name(cluster).to_string();
        tracing::debug!(cluster = %key, services = names.len(), "reading services");
        for chunk in names.chunks(DESCRIBE_BATCH) {
            // Age counts from the request, not the answer.
            let sent = Instant::now();
            let epochs: Vec<u64> = {
                let all = self.lock();
                chunk
                    .iter()
                    .map(|n| {
                        all.get(&key)
                            .and_then(|c| c.epoch.get(n).copied())
                            .unwrap_or(0)
                    })
                    .collect()
            };
            let found = describe(ecs, cluster, chunk).await?;
            {
                let mut all = self.lock();
                let c = all.entry(key.clone()).or_default();
                for (n, epoch) in chunk.iter().zip(epochs) {
                    if c.epoch.get(n).copied().unwrap_or(0) == epoch {
                        c.seen.insert(n.clone(), (sent, found.get(n).cloned()));
                    }
                }
            }
            // Outside the lock: `answered` may look at the cache.
            for n in chunk {
                answered(n, found.get(n));
            }
        }
        Ok(())
    }

    /// Records what a reconcile of `name` was given, for `sweep` to compare with.
    fn delivered(&self, cluster: &str, name: &str, obs: Option<&ObservedService>) {
        let mut all = self.lock();
        let c = all.entry(cluster_name(cluster).to_string()).or_default();
        c.delivered.insert(name.to_string(), digest(obs));
    }

    /// Reads each of `names` whose copy is older than `older_than` (10 a call; the
    /// others were read by their own reconciles a moment ago) and returns those whose
    /// copy differs from the one their last reconcile was given: the services a
    /// resync has to reconcile. The rest cost a tenth of a read and no reconcile.
    pub async fn sweep(
        &self,
        ecs: &EcsApi,
        cluster: &str,
        names: &[String],
        older_than: Duration,
    ) -> Result<Vec<String>, Error> {
        let gate = self.gate(cluster);
        let _turn = gate.lock().await;
        let due: Vec<String> = {
            let all = self.lock();
            let seen = all.get(cluster_name(cluster)).map(|c| &c.seen);
            let fresh = |n: &String| {
                seen.and_then(|s| s.get(n))
                    .is_some_and(|(at, _)| at.elapsed() <= older_than)
            };
            names.iter().filter(|n| !fresh(n)).cloned().collect()
        };
        let mut changed = Vec::new();
        self.read(ecs, cluster, &due, |n, obs| {
            let all = self.lock();
            let was = all
                .get(cluster_name(cluster))
                .and_then(|c| c.delivered.get(n).copied());
            if was.is_some_and(|was| was != digest(obs)) {
                changed.push(n.to_string());
            }
        })
        .await?;
        Ok(changed)
    }

    fn gate(&self, cluster: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cluster_name(cluster).to_string())
            .or_default()
            .clone()
    }

    /// Makes `names` peers of the cluster's reads before any of them asks: after a
    /// restart, the first reconciles then read 10 a call instead of one each.
    pub fn know(&self, cluster: &str, names: &[String]) {
        let mut all = self.lock();
        let c = all.entry(cluster_name(cluster).to_string()).or_default();
        c.known.extend(names.iter().cloned());
    }

    /// Notes that the reconcile of `name` will look again `after` from now.
    pub fn expect(&self, cluster: &str, name: &str, after: Duration) {
        let mut all = self.lock();
        let c = all.entry(cluster_name(cluster).to_string()).or_default();
        c.due.insert(name.to_string(), Instant::now() + after);
    }

    /// Notes whether `name` wants fresh copies now (see `ClusterCache::hot`).
    fn mark(&self, cluster: &str, name: &str, hot: bool) {
        let mut all = self.lock();
        let c = all.entry(cluster_name(cluster).to_string()).or_default();
        // It looks now: any expectation is met.
        c.due.remove(name);
        if hot {
            c.hot.insert(name.to_string());
        } else {
            c.hot.remove(name);
        }
    }

    /// Forget the cached copy (after a write, so the next read sees its effect).
    pub fn invalidate(&self, cluster: &str, name: &str) {
        let mut all = self.lock();
        let c = all.entry(cluster_name(cluster).to_string()).or_default();
        c.seen.remove(name);
        *c.epoch.entry(name.to_string()).or_insert(0) += 1;
    }

    /// How `task_definitions_in_use` names the ECS service `name` of `cluster` (a
    /// name or an ARN).
    pub fn user(cluster: &str, name: &str) -> String {
        format!("ECS service {}/{name}", cluster_name(cluster))
    }

    /// (task definition, "ECS service <cluster>/<name>") for every revision the
    /// services last read run or deploy (deployments and task sets): ECS's own view
    /// of what is in use, which may be newer than any status.
    pub fn task_definitions_in_use(&self) -> Vec<(String, String)> {
        let all = self.lock();
        let mut out = Vec::new();
        for (cluster, cache) in all.iter() {
            for (name, (_, obs)) in &cache.seen {
                let Some(obs) = obs.as_ref().filter(|o| o.status == ServiceState::Active) else {
                    continue;
                };
                let who = Self::user(cluster, name);
                let tds = std::iter::once(&obs.task_definition)
                    .chain(obs.deployments.iter().map(|d| &d.task_definition))
                    .chain(obs.task_sets.iter().map(|t| &t.task_definition))
                    .filter(|td| !td.is_empty());
                out.extend(tds.map(|td| (td.clone(), who.clone())));
            }
        }
        out
    }

    /// Stop reading a service along with its peers (its EcsService is gone).
    pub fn forget(&self, cluster: &str, name: &str) {
        if let Some(c) = self.lock().get_mut(cluster_name(cluster)) {
            c.seen.remove(name);
            c.known.remove(name);
            c.epoch.remove(name);
            c.hot.remove(name);
            c.delivered.remove(name);
            c.due.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(read_ago: &[(&str, u64)], hot: &[&str]) -> ClusterCache {
        let mut c = ClusterCache::default();
        for (name, secs) in read_ago {
            c.known.insert(name.to_string());
            let at = Instant::now() - Duration::from_secs(*secs);
            let copy = ObservedService {
                name: name.to_string(),
                ..Default::default()
            };
            c.seen.insert(name.to_string(), (at, Some(copy)));
        }
        c.hot = hot.iter().map(|h| h.to_string()).collect();
        c
    }

    #[test]
    fn a_read_fills_its_one_call_hot_peers_first() {
        let window = Duration::from_secs(30);
        let mut reads = vec![("me", 0), ("s1", 60), ("s2", 60), ("s3", 60)];
        let hot_names: Vec<String> = (0..9).map(|i| format!("h{i}")).collect();
        for (i, h) in hot_names.iter().enumerate() {
            reads.push((h.as_str(), 3 + i as u64));
        }
        // A hot peer read a moment ago is fresh enough: not read again.
        reads.push(("just-read", 1));
        let mut hot: Vec<&str> = hot_names.iter().map(String::as_str).collect();
        hot.push("just-read");
        let c = cache(&reads, &hot);
        let peers = c.peers("me", window);
        // 9 places: the hot ones, oldest first, then no room for the stale ones.
        assert_eq!(
            peers,
            ["h8", "h7", "h6", "h5", "h4", "h3", "h2", "h1", "h0"]
        );
        let few = cache(&[("me", 0), ("s1", 60), ("h", 5)], &["h"]);
        assert_eq!(few.peers("me", window), ["h", "s1"]);
        // Due for a poll now: first in line, whatever its copy; due later: not read
        // now (the copy would be too old by then).
        let mut polls = cache(
            &[("me", 0), ("old", 10), ("soon", 10), ("later", 10)],
            &["old"],
        );
        polls
            .due
            .insert("soon".into(), Instant::now() + Duration::from_millis(500));
        polls
            .due
            .insert("later".into(), Instant::now() + Duration::from_secs(5));
        assert_eq!(polls.peers("me", window), ["soon", "old"]);
        // No copy at all (known from a restart): before the hot ones.
        let mut restart = cache(&[("me", 0), ("old", 10)], &["old"]);
        restart.known.insert("new".into());
        assert_eq!(restart.peers("me", window), ["new", "old"]);
        // Hot, but ECS said it has no such service: not read along (not created yet).
        let mut absent = cache(&[("me", 0)], &["gone"]);
        absent.known.insert("gone".into());
        absent
            .seen
            .insert("gone".into(), (Instant::now() - window, None));
        assert!(absent.peers("me", window).is_empty());
        // Not hot (Ready, read recently): not read along.
        let cold = cache(&[("me", 0), ("a", 5), ("b", 5)], &[]);
        assert!(cold.peers("me", window).is_empty());
    }
}
