//! How the embedded backends' writer threads wait for work: they look again for a moment,
//! yielding the CPU between looks, before they sleep on their queue.
//!
//! A thread asleep on its queue must be woken by whoever queues the next job: a `futex` call
//! on the sender's side and two context switches, per batch. Under load the next job comes
//! within microseconds of the last batch, so a writer that lingers finds it without being
//! woken, and its batches grow. `yield_now` hands the CPU to any thread that can run, so a
//! lingering writer costs the others little; with nothing else to run, it costs at most
//! [`LINGER`] per wait (docs/performance-history.md, profiling log entry 44).
//!
//! A writer yields at most [`MAX_YIELDS`] times per wait: on Linux each `sched_yield` with
//! other threads runnable may push the yielding thread's scheduling deadline back by a time
//! slice, and many of them in a row could leave it waiting behind every other thread on its
//! core with a job already queued.

use std::time::{Duration, Instant};

/// How long a writer thread keeps looking for work before it sleeps on its queue.
pub const LINGER: Duration = Duration::from_micros(50);

/// Most times a writer thread yields the CPU while it lingers, within [`LINGER`].
pub const MAX_YIELDS: u32 = 4;

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

impl<T> From<Result<T, tokio::sync::mpsc::error::TryRecvError>> for Look<T> {
    /// What a tokio queue's `try_recv` found (it leaves no waker to be woken by).
    fn from(taken: Result<T, tokio::sync::mpsc::error::TryRecvError>) -> Self {
        use tokio::sync::mpsc::error::TryRecvError;
        match taken {
            Ok(job) => Look::Found(job),
            Err(TryRecvError::Empty) => Look::Empty,
            Err(TryRecvError::Disconnected) => Look::Closed,
        }
    }
}

impl<T> From<Result<T, std::sync::mpsc::TryRecvError>> for Look<T> {
    /// What a std queue's `try_recv` found.
    fn from(taken: Result<T, std::sync::mpsc::TryRecvError>) -> Self {
        use std::sync::mpsc::TryRecvError;
        match taken {
            Ok(job) => Look::Found(job),
            Err(TryRecvError::Empty) => Look::Empty,
            Err(TryRecvError::Disconnected) => Look::Closed,
        }
    }
}

/// Looks with `look` until it finds a job or the queue is closed, yielding the CPU between
/// looks, for at most `linger` and [`MAX_YIELDS`] yields; then answers what the last look
/// found ([`Look::Empty`] once either has run out, and the caller sleeps on its queue).
pub fn linger<T>(linger: Duration, mut look: impl FnMut() -> Look<T>) -> Look<T> {
    let start = Instant::now();
    let mut yields = 0;
    loop {
        match look() {
            Look::Empty if yields < MAX_YIELDS && start.elapsed() < linger => {
                std::thread::yield_now();
                yields += 1;
            }
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
            if looks <= MAX_YIELDS {
                Look::Empty
            } else {
                Look::Found(looks)
            }
        });
        assert_eq!(found, Look::Found(MAX_YIELDS + 1));
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
    fn an_empty_queue_is_given_up_after_the_last_yield() {
        let mut looks = 0;
        let found: Look<()> = linger(Duration::from_secs(60), || {
            looks += 1;
            Look::Empty
        });
        assert_eq!((found, looks), (Look::Empty, MAX_YIELDS + 1));
    }

    #[test]
    fn an_empty_queue_is_given_up_once_the_time_has_passed() {
        let mut looks = 0;
        let found: Look<()> = linger(Duration::from_millis(5), || {
            looks += 1;
            // Each look takes 3 ms: the time runs out before the yields do.
            std::thread::sleep(Duration::from_millis(3));
            Look::Empty
        });
        assert_eq!((found, looks), (Look::Empty, 2));
    }
}
