//! Whether ECS answers, as the calls see it. A resource that failed because ECS
//! could not be reached backs off (2 s doubling, up to 5 min); after a long outage
//! its next try may be minutes away. So the first answer after an outage wakes
//! every resource that failed for it (`reconcile::driver` subscribes), and while
//! ECS is down one cheap probe every `PROBE_EVERY` finds out when it is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::error::{Error, ErrorClass};

/// How often ECS is probed while it does not answer (one ListClusters).
pub const PROBE_EVERY: Duration = Duration::from_secs(10);

/// An error that says ECS is not there (nothing reached it, nothing readable came
/// back, or ECS answered it is failing): not one about the request.
pub fn is_outage(err: &Error) -> bool {
    match err {
        Error::Ecs {
            code: None,
            class: ErrorClass::Retryable,
            ..
        } => true,
        Error::Ecs { code: Some(c), .. } => super::SERVER_FAULT_CODES.contains(&c.as_str()),
        _ => false,
    }
}

#[derive(Debug)]
pub struct Reachability {
    down: AtomicBool,
    /// Counts the outages that ended; a change wakes the subscribers.
    recovered: watch::Sender<u64>,
}

impl Default for Reachability {
    fn default() -> Self {
        Reachability {
            down: AtomicBool::new(false),
            recovered: watch::Sender::new(0),
        }
    }
}

impl Reachability {
    /// Notes how a call ended: an outage error marks ECS down; any answer (an
    /// error about the request included) marks it up, ending an outage.
    pub fn saw(&self, result: Result<(), &Error>) {
        match result {
            Err(e) if is_outage(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "ECS does not answer; probing every 10 s");
                }
            }
            _ => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("ECS answers again; waking what failed while it did not");
                    self.recovered.send_modify(|n| *n += 1);
                }
            }
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Changes once per outage that ended.
    pub fn recoveries(&self) -> watch::Receiver<u64> {
        self.recovered.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ecs_error(code: Option<&str>, class: ErrorClass) -> Error {
        Error::Ecs {
            operation: "DescribeServices",
            code: code.map(str::to_string),
            message: "m".into(),
            class,
        }
    }

    #[test]
    fn outages_are_what_ecs_itself_does_not_answer() {
        assert!(is_outage(&ecs_error(None, ErrorClass::Retryable)));
        assert!(is_outage(&ecs_error(
            Some("ServerException"),
            ErrorClass::Retryable
        )));
        assert!(!is_outage(&ecs_error(
            Some("ThrottlingException"),
            ErrorClass::Retryable
        )));
        assert!(!is_outage(&ecs_error(
            Some("ClientException"),
            ErrorClass::Terminal
        )));
        assert!(!is_outage(&ecs_error(None, ErrorClass::Terminal)));
    }

    #[test]
    fn the_first_answer_after_an_outage_ends_it_once() {
        let reach = Reachability::default();
        let mut woken = reach.recoveries();
        reach.saw(Ok(()));
        assert!(!woken.has_changed().unwrap(), "no outage, nothing to wake");
        let down = ecs_error(None, ErrorClass::Retryable);
        reach.saw(Err(&down));
        reach.saw(Err(&down));
        assert!(reach.is_down());
        // A refusal is an answer: ECS is back.
        reach.saw(Err(&ecs_error(
            Some("ClientException"),
            ErrorClass::Terminal,
        )));
        assert!(!reach.is_down());
        assert!(woken.has_changed().unwrap());
        assert_eq!(*woken.borrow_and_update(), 1);
        reach.saw(Ok(()));
        assert!(!woken.has_changed().unwrap(), "one wake per outage");
    }
}
