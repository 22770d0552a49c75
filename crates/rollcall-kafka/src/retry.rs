//! Which Kafka errors are worth retrying, in one place, and the one way to retry them.
//!
//! - [`ErrorClass::Transient`]: the broker or the network is not there yet or is moving
//!   (transport failures, timeouts, leader or coordinator elections, a topic created a
//!   moment ago). Retry with backoff for as long as it takes.
//! - [`ErrorClass::Record`]: the broker refused what was sent (a message too large, an
//!   invalid record). Retrying the same records fails the same way: find the culprit
//!   and dead-letter it.
//! - [`ErrorClass::Fatal`]: configuration, authentication, authorization, a fenced
//!   producer or anything unknown. Stop loudly.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode as C};

use crate::KafkaError;

/// How an error should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Transient,
    Record,
    Fatal,
}

/// The class of an rdkafka error code.
pub fn classify_code(code: C) -> ErrorClass {
    match code {
        C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::OperationTimedOut
        | C::RequestTimedOut
        | C::NetworkException
        | C::Resolve
        | C::NotLeaderForPartition
        | C::LeaderNotAvailable
        | C::PreferredLeaderNotAvailable
        | C::FencedLeaderEpoch
        | C::UnknownLeaderEpoch
        | C::OffsetNotAvailable
        | C::UnknownTopicOrPartition
        | C::UnknownPartition
        | C::NotCoordinator
        | C::CoordinatorNotAvailable
        | C::CoordinatorLoadInProgress
        | C::WaitingForCoordinator
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::KafkaStorageError
        | C::RebalanceInProgress
        | C::UnstableOffsetCommit
        | C::ConcurrentTransactions
        | C::QueueFull
        | C::TimedOutQueue
        | C::PurgeQueue
        | C::PurgeInflight
        | C::Retry
        | C::Interrupted
        | C::NoOffset
        | C::Partial
        | C::ThrottlingQuotaExceeded
        | C::StaleControllerEpoch
        | C::StaleMemberEpoch => ErrorClass::Transient,
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::InvalidMessage
        | C::MessageBatchTooLarge
        | C::InvalidRecord
        | C::MessageTimedOut
        | C::KeySerialization
        | C::ValueSerialization
        | C::BadMessage => ErrorClass::Record,
        _ => ErrorClass::Fatal,
    }
}

/// The class of an rdkafka error. A transaction error that only requires an abort (or is
/// retriable) is transient unless its code says the records are at fault.
pub fn classify(e: &RdError) -> ErrorClass {
    if let RdError::Transaction(t) = e {
        if t.is_fatal() {
            return ErrorClass::Fatal;
        }
        return match classify_code(t.code()) {
            ErrorClass::Fatal if t.txn_requires_abort() || t.is_retriable() => {
                ErrorClass::Transient
            }
            c => c,
        };
    }
    match e.rdkafka_error_code() {
        Some(code) => classify_code(code),
        None => ErrorClass::Fatal,
    }
}

impl KafkaError {
    /// How this error should be handled; see [`ErrorClass`].
    pub fn class(&self) -> ErrorClass {
        match self {
            KafkaError::Client { source, .. } => classify(source),
            KafkaError::Transient(_) => ErrorClass::Transient,
            KafkaError::Refused(_) => ErrorClass::Record,
            KafkaError::Other(_) => ErrorClass::Fatal,
        }
    }

    /// Worth retrying with backoff.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }
}

/// Exponential backoff: 100 ms doubling up to 10 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(100),
            attempts: 0,
        }
    }
}

impl Backoff {
    pub const MAX: Duration = Duration::from_secs(10);

    /// The next wait (and count the attempt).
    pub fn next_wait(&mut self) -> Duration {
        let w = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        self.attempts += 1;
        w
    }

    /// Wait the next backoff in slices of at most 50 ms; returns `false` at once if
    /// `stop()` becomes true.
    pub fn wait(&mut self, stop: &dyn Fn() -> bool) -> bool {
        let until = Instant::now() + self.next_wait();
        while Instant::now() < until {
            if stop() {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        !stop()
    }
}

/// What to do while retrying.
pub struct Retry<'a> {
    /// Give up (with the last error) once this is true: shutdown.
    pub stop: &'a dyn Fn() -> bool,
    /// Give up after this long (`None`: retry for as long as it takes).
    pub budget: Option<Duration>,
    /// Called with `true` before each wait and `false` once the call succeeds after a
    /// retry (readiness off while retrying).
    pub retrying: &'a dyn Fn(bool),
}

impl Retry<'static> {
    /// Retry transient errors for up to `budget`, with nothing else to watch.
    pub fn for_up_to(budget: Duration) -> Retry<'static> {
        Retry {
            stop: &|| false,
            budget: Some(budget),
            retrying: &|_| {},
        }
    }
}

/// How long library calls with no caller policy retry transient errors before
/// returning them (the caller may retry further: [`KafkaError::is_transient`]).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

/// Run `f`, retrying transient errors with [`Backoff`] as `policy` says. Record and fatal
/// errors return at once.
pub fn retry_transient<T>(
    doing: &str,
    policy: &Retry<'_>,
    mut f: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, KafkaError> {
    let started = Instant::now();
    let mut backoff = Backoff::default();
    loop {
        match f() {
            Ok(v) => {
                if backoff.attempts > 0 {
                    tracing::info!(
                        doing,
                        attempts = backoff.attempts,
                        "succeeded after retrying"
                    );
                    (policy.retrying)(false);
                }
                return Ok(v);
            }
            Err(e) if e.is_transient() => {
                let over = policy.budget.is_some_and(|b| started.elapsed() >= b);
                if over || (policy.stop)() {
                    return Err(e);
                }
                (policy.retrying)(true);
                tracing::warn!(doing, error = %e, attempt = backoff.attempts + 1,
                    "transient Kafka error; retrying with backoff");
                if !backoff.wait(policy.stop) {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn broker_and_coordinator_moves_are_transient() {
        for c in [
            C::BrokerTransportFailure,
            C::AllBrokersDown,
            C::NotLeaderForPartition,
            C::NotCoordinator,
            C::CoordinatorLoadInProgress,
            C::WaitingForCoordinator,
            C::RequestTimedOut,
            C::OperationTimedOut,
            C::UnknownTopicOrPartition,
        ] {
            assert_eq!(classify_code(c), ErrorClass::Transient, "{c:?}");
        }
    }

    #[test]
    fn refused_records_and_misconfiguration_are_not() {
        assert_eq!(classify_code(C::MessageSizeTooLarge), ErrorClass::Record);
        assert_eq!(classify_code(C::MessageBatchTooLarge), ErrorClass::Record);
        for c in [
            C::SaslAuthenticationFailed,
            C::TopicAuthorizationFailed,
            C::InvalidConfig,
            C::ProducerFenced,
            C::Fatal,
        ] {
            assert_eq!(classify_code(c), ErrorClass::Fatal, "{c:?}");
        }
        let e = KafkaError::Other("topic x does not exist".into());
        assert!(!e.is_transient());
        let e = KafkaError::Client {
            doing: "committing".into(),
            source: RdError::ConsumerCommit(C::NotCoordinator),
        };
        assert!(e.is_transient());
        let e = KafkaError::Client {
            doing: "reading metadata".into(),
            source: RdError::ClientCreation("bad".into()),
        };
        assert_eq!(e.class(), ErrorClass::Fatal);
    }

    #[test]
    fn backoff_doubles_to_a_bound() {
        let mut b = Backoff::default();
        let w: Vec<u64> = (0..10).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(&w[..5], &[100, 200, 400, 800, 1600]);
        assert_eq!(*w.last().unwrap(), 10_000);
    }

    #[test]
    fn transient_errors_are_retried_and_others_returned_at_once() {
        let calls = Cell::new(0);
        let flips = Cell::new(0);
        let policy = Retry {
            stop: &|| false,
            budget: None,
            retrying: &|_| flips.set(flips.get() + 1),
        };
        let got = retry_transient("test", &policy, || {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(KafkaError::Client {
                    doing: "x".into(),
                    source: RdError::MetadataFetch(C::BrokerTransportFailure),
                })
            } else {
                Ok(7)
            }
        });
        assert_eq!(got.unwrap(), 7);
        assert_eq!(calls.get(), 3);
        assert_eq!(flips.get(), 3, "two waits, then ready again");

        calls.set(0);
        let got: Result<(), _> = retry_transient("test", &policy, || {
            calls.set(calls.get() + 1);
            Err(KafkaError::Other("fatal".into()))
        });
        assert!(got.is_err());
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn a_stop_request_ends_the_retries() {
        let calls = Cell::new(0);
        let policy = Retry {
            stop: &|| calls.get() >= 2,
            budget: None,
            retrying: &|_| {},
        };
        let got: Result<(), _> = retry_transient("test", &policy, || {
            calls.set(calls.get() + 1);
            Err(KafkaError::Transient("broker down".into()))
        });
        assert!(got.is_err());
        assert_eq!(calls.get(), 2);
    }
}
