//! How the embedded backends' writer threads wait for work: they look again for a moment,
//! yielding the CPU between looks, before they sleep on their queue.
//!
//! A thread asleep on its queue must be woken by whoever queues the next job: a `futex` call
//! on the sender's side and two context switches, per batch. Under load the next job comes
//! within microseconds of the last batch, so a writer that lingers finds it without being
//! woken, and its batches grow. `yield_now` hands the CPU to any thread that can run, so a
//! lingering writer costs the others little; with nothing else to run, it costs at most
//! [`LINGER`] per wait (docs/performance.md, profiling log entry 44).

use std::time::{Duration, Instant};

/// How long a writer thread keeps looking for work before it sleeps on its queue.
pub const LINGER: Duration = Duration::from_micros(50);

/// What one non-blocking look at a queue found.
#[derive(Debug, PartialEq, Eq)]
pub enum Look<T> {
    /// A job.
    Found(T),
    /// Nothing yet.
    Empty,
    /// Nothing, ever again: every sender is gone.
    Closed,
}

/// Looks with `look` until it finds a job or the queue is closed, yielding the CPU between
/// looks, for at most `linger`; then answers what the last look found ([`Look::Empty`] once
/// `linger` has passed, and the caller sleeps on its queue).
pub fn linger<T>(linger: Duration, mut look: impl FnMut() -> Look<T>) -> Look<T> {
    let start = Instant::now();
    loop {
        match look() {
            Look::Empty if start.elapsed() < linger => std::thread::yield_now(),
            found => return found,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_that_comes_while_lingering_is_taken_without_sleeping() {
        let mut looks = 0;
        let found = linger(Duration::from_secs(60), || {
            looks += 1;
            if looks < 4 {
                Look::Empty
            } else {
                Look::Found(looks)
            }
        });
        assert_eq!(found, Look::Found(4));
    }

    #[test]
    fn a_closed_queue_ends_the_wait_at_once() {
        let mut looks = 0;
        let found: Look<()> = linger(Duration::from_secs(60), || {
            looks += 1;
            Look::Closed
        });
        assert_eq!((found, looks), (Look::Closed, 1));
    }

    #[test]
    fn an_empty_queue_is_given_up_once_the_time_has_passed() {
        let mut looks = 0;
        let start = Instant::now();
        let found: Look<()> = linger(Duration::from_millis(5), || {
            looks += 1;
            Look::Empty
        });
        assert_eq!(found, Look::Empty);
        assert!(start.elapsed() >= Duration::from_millis(5));
        assert!(looks > 1, "looked again before giving up");
    }
}
