//! Client-side token buckets, one per ECS quota category.
//!
//! ECS rate limits are per account and region and shared with every other caller;
//! staying under them ourselves keeps the operator from burning its retries on
//! ThrottlingException and from starving other tools.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// The ECS quota an API action counts against (DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// Describe*/List* calls.
    Read,
    /// CreateService, UpdateService, DeleteService.
    ServiceModify,
    /// RegisterTaskDefinition, DeregisterTaskDefinition, DeleteTaskDefinitions.
    TaskDefinitionModify,
    /// CreateCluster, UpdateCluster, DeleteCluster, PutClusterCapacityProviders.
    ClusterModify,
    /// RunTask, StopTask.
    RunTask,
    /// TagResource, UntagResource.
    Tagging,
    /// Application Auto Scaling (its own account quotas, not ECS's).
    AutoScaling,
}

impl Category {
    pub const ALL: [Category; 7] = [
        Category::Read,
        Category::ServiceModify,
        Category::TaskDefinitionModify,
        Category::ClusterModify,
        Category::RunTask,
        Category::Tagging,
        Category::AutoScaling,
    ];
}

/// Sustained rate (per second) and burst of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// Defaults from the ECS service quotas.
pub fn default_rate(c: Category) -> Rate {
    let (per_second, burst) = match c {
        Category::Read => (20.0, 100.0),
        Category::ServiceModify => (5.0, 50.0),
        Category::TaskDefinitionModify => (1.0, 20.0),
        Category::ClusterModify => (1.0, 20.0),
        Category::RunTask => (40.0, 40.0),
        Category::Tagging => (5.0, 50.0),
        // Application Auto Scaling publishes no per-action rates; a steady 10/s (burst
        // 40) stays well under its shared account throttle.
        Category::AutoScaling => (10.0, 40.0),
    };
    Rate { per_second, burst }
}

#[derive(Debug)]
struct State {
    tokens: f64,
    last: Instant,
}

/// A token bucket; `acquire` waits until a token is available.
#[derive(Debug)]
pub struct TokenBucket {
    rate: Rate,
    state: Mutex<State>,
}

impl TokenBucket {
    pub fn new(rate: Rate) -> Self {
        TokenBucket {
            rate,
            state: Mutex::new(State {
                tokens: rate.burst,
                last: Instant::now(),
            }),
        }
    }

    /// Takes one token, sleeping as long as needed. Returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        // Holding the lock while sleeping serialises waiters in arrival order.
        let mut s = self.state.lock().await;
        loop {
            let now = Instant::now();
            let elapsed = now.duration_since(s.last).as_secs_f64();
            s.tokens = (s.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
            s.last = now;
            if s.tokens >= 1.0 {
                s.tokens -= 1.0;
                return start.elapsed();
            }
            let wait = (1.0 - s.tokens) / self.rate.per_second.max(f64::MIN_POSITIVE);
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}

/// One bucket per category.
#[derive(Debug)]
pub struct Limiter {
    buckets: Vec<(Category, TokenBucket)>,
}

impl Limiter {
    pub fn new(rate: impl Fn(Category) -> Rate) -> Self {
        let buckets = Category::ALL
            .into_iter()
            .map(|c| (c, TokenBucket::new(rate(c))))
            .collect();
        Limiter { buckets }
    }

    pub async fn acquire(&self, c: Category) -> Duration {
        match self.buckets.iter().find(|(k, _)| *k == c) {
            Some((_, b)) => b.acquire().await,
            None => Duration::ZERO,
        }
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(default_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_is_free_then_rate_applies() {
        let b = TokenBucket::new(Rate {
            per_second: 2.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            assert_eq!(b.acquire().await, Duration::ZERO);
        }
        // The 4th and 5th tokens each take half a second at 2/s.
        let waited = b.acquire().await;
        assert!(
            (waited.as_secs_f64() - 0.5).abs() < 0.01,
            "waited {waited:?}"
        );
        let waited = b.acquire().await;
        assert!(
            (waited.as_secs_f64() - 0.5).abs() < 0.01,
            "waited {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_refill_up_to_the_burst_only() {
        let b = TokenBucket::new(Rate {
            per_second: 1.0,
            burst: 2.0,
        });
        b.acquire().await;
        b.acquire().await;
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(b.acquire().await, Duration::ZERO);
        assert_eq!(b.acquire().await, Duration::ZERO);
        assert!(b.acquire().await >= Duration::from_millis(990));
    }

    #[tokio::test(start_paused = true)]
    async fn categories_are_independent() {
        let l = Limiter::new(|_| Rate {
            per_second: 1.0,
            burst: 1.0,
        });
        assert_eq!(l.acquire(Category::ClusterModify).await, Duration::ZERO);
        assert_eq!(l.acquire(Category::Read).await, Duration::ZERO);
        assert!(l.acquire(Category::ClusterModify).await >= Duration::from_millis(990));
    }
}
