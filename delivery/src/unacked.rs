//! Envelopes written to a session but not acked yet; the ones that stay unacked too long wake
//! their recipient.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::time::Instant;

use foldhash::HashMap;
use pipeline::{MessageId, UserUrn};

/// Deadlines of written, unacked envelopes, in the order they were written.
#[derive(Default)]
pub struct UnackedTracker {
    deadlines: HashMap<(UserUrn, MessageId), (Instant, Instant)>,
    order: VecDeque<(Instant, UserUrn, MessageId)>,
}

impl UnackedTracker {
    /// Remembers that `id` was written to `user` and must be acked by `deadline`.
    /// A rewrite keeps the first deadline.
    pub fn written(&mut self, user: &UserUrn, id: &MessageId, deadline: Instant) {
        let Entry::Vacant(entry) = self.deadlines.entry((user.clone(), id.clone())) else {
            return;
        };
        entry.insert((deadline, Instant::now()));
        self.order.push_back((deadline, user.clone(), id.clone()));
    }

    /// Forgets acked envelopes; returns when each of those it tracked was written.
    pub fn acked(&mut self, user: &UserUrn, ids: &[MessageId]) -> Vec<Instant> {
        ids.iter()
            .filter_map(|id| self.deadlines.remove(&(user.clone(), id.clone())))
            .map(|(_, written)| written)
            .collect()
    }

    /// Takes every envelope whose deadline passed by `now` and that was not acked.
    pub fn overdue(&mut self, now: Instant) -> Vec<(UserUrn, MessageId)> {
        let mut due = Vec::new();
        while let Some((deadline, _, _)) = self.order.front() {
            if *deadline > now {
                break;
            }
            let Some((deadline, user, id)) = self.order.pop_front() else {
                break;
            };
            let key = (user, id);
            if self.deadlines.get(&key).map(|(d, _)| *d) == Some(deadline) {
                self.deadlines.remove(&key);
                due.push(key);
            }
        }
        due
    }

    /// Whether nothing waits for an ack.
    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_unacked_envelopes_come_due() {
        let mut tracker = UnackedTracker::default();
        let user = UserUrn::parse("u").unwrap();
        let (a, b) = (
            MessageId::parse("a").unwrap(),
            MessageId::parse("b").unwrap(),
        );
        let start = Instant::now();
        tracker.written(&user, &a, start + Duration::from_secs(1));
        tracker.written(&user, &b, start + Duration::from_secs(2));
        tracker.acked(&user, std::slice::from_ref(&a));
        assert!(tracker.overdue(start).is_empty());
        assert!(
            tracker
                .overdue(start + Duration::from_millis(1500))
                .is_empty(),
            "a was acked"
        );
        assert_eq!(
            tracker.overdue(start + Duration::from_secs(3)),
            vec![(user, b)]
        );
        assert!(tracker.is_empty());
    }
}
