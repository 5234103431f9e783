//! Resilience scenarios: the operator under ECS faults, lost answers, an ECS outage,
//! SIGKILLs and SIGTERM, on the real environment (kube-apiserver + etcd, ministack
//! behind the strict layer, microburst in front of it for the faults). Each scenario
//! ends with the same audit of what ECS holds (see `workload`). Heavier than the e2e
//! tests, so a binary of its own; `cargo test` (and CI) runs both.

// The e2e support module, shared: some of its helpers are for the e2e tests only.
#[allow(dead_code)]
#[path = "../e2e/support.rs"]
mod support;

mod apiserver;
mod crash;
mod faults;
mod hot_loop;
mod workload;

/// The seed of this run's random choices (`RESILIENCE_SEED=N` replays one), printed
/// by each test that uses it.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("RESILIENCE_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(1);
            u64::from(nanos) ^ u64::from(std::process::id())
        });
    eprintln!("{test}: seed {seed} (replay with RESILIENCE_SEED={seed})");
    seed
}

/// A small deterministic generator for the seeded choices (no extra dependency).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// xorshift64*: a value in [lo, hi).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        lo + x % (hi - lo).max(1)
    }
}
