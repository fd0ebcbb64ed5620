//! In-memory presence (`PRESENCE=memory`): one process's view, with the same expiry rules as
//! the shared backends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use foldhash::HashMap;
use pipeline::clock::Clock;
use pipeline::error::PresenceError;
use pipeline::ports::presence::{PresenceStore, SessionInfo};
use pipeline::{InstanceId, SessionId, UserUrn};

#[derive(Default)]
struct State {
    sessions: HashMap<UserUrn, HashMap<SessionId, (SessionInfo, u64)>>,
    instances: HashMap<InstanceId, u64>,
}

/// Presence held in this process.
pub struct MemoryPresenceStore {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl MemoryPresenceStore {
    /// An empty presence store on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    /// The live sessions of `user` on live instances at `now`; forgets its expired ones.
    fn live_sessions(&mut self, user: &UserUrn, now: u64) -> Vec<SessionInfo> {
        let Self {
            sessions,
            instances,
        } = self;
        let Some(user_sessions) = sessions.get_mut(user) else {
            return Vec::new();
        };
        user_sessions.retain(|_, (_, expires)| *expires > now);
        let live = user_sessions
            .values()
            .filter(|(info, _)| instances.get(&info.instance).is_some_and(|&at| at > now))
            .map(|(info, _)| info.clone())
            .collect();
        if user_sessions.is_empty() {
            sessions.remove(user);
        }
        live
    }
}

fn until(now: u64, ttl: Duration) -> u64 {
    now + ttl.as_millis() as u64
}

#[async_trait]
impl PresenceStore for MemoryPresenceStore {
    async fn register(&self, session: &SessionInfo, ttl: Duration) -> Result<(), PresenceError> {
        let expires = until(self.clock.now_ms(), ttl);
        self.state()
            .sessions
            .entry(session.user.clone())
            .or_default()
            .insert(session.session.clone(), (session.clone(), expires));
        Ok(())
    }

    async fn heartbeat(
        &self,
        user: &UserUrn,
        session: &SessionId,
        ttl: Duration,
    ) -> Result<bool, PresenceError> {
        let now = self.clock.now_ms();
        let mut state = self.state();
        let Some(entry) = state
            .sessions
            .get_mut(user)
            .and_then(|s| s.get_mut(session))
        else {
            return Ok(false);
        };
        if entry.1 <= now {
            return Ok(false);
        }
        entry.0.last_seen_ms = now;
        entry.1 = until(now, ttl);
        Ok(true)
    }

    async fn unregister(&self, user: &UserUrn, session: &SessionId) -> Result<(), PresenceError> {
        let mut state = self.state();
        if let Some(sessions) = state.sessions.get_mut(user) {
            sessions.remove(session);
            if sessions.is_empty() {
                state.sessions.remove(user);
            }
        }
        Ok(())
    }

    async fn sessions(&self, user: &UserUrn) -> Result<Vec<SessionInfo>, PresenceError> {
        let now = self.clock.now_ms();
        Ok(self.state().live_sessions(user, now))
    }

    /// One lock and one clock reading for the whole batch.
    async fn sessions_many(
        &self,
        users: &[UserUrn],
    ) -> Result<Vec<Vec<SessionInfo>>, PresenceError> {
        let now = self.clock.now_ms();
        let mut state = self.state();
        Ok(users
            .iter()
            .map(|user| state.live_sessions(user, now))
            .collect())
    }

    async fn instance_alive(
        &self,
        instance: &InstanceId,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        let expires = until(self.clock.now_ms(), ttl);
        self.state().instances.insert(instance.clone(), expires);
        Ok(())
    }

    async fn instance_live(&self, instance: &InstanceId) -> Result<bool, PresenceError> {
        let now = self.clock.now_ms();
        Ok(self
            .state()
            .instances
            .get(instance)
            .is_some_and(|&at| at > now))
    }

    async fn remove_instance(&self, instance: &InstanceId) -> Result<(), PresenceError> {
        let mut state = self.state();
        state.instances.remove(instance);
        state.sessions.retain(|_, sessions| {
            sessions.retain(|_, (info, _)| &info.instance != instance);
            !sessions.is_empty()
        });
        Ok(())
    }

    async fn check(&self) -> Result<(), PresenceError> {
        Ok(())
    }
}
