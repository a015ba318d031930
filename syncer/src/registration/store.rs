//! The live registrations: limits, conflicts between instances of one
//! service, absolute deadlines (so a state file loaded after a restart
//! still expires what lapsed meanwhile), and a `watch` of the set that
//! changes only when an instance comes or goes (heartbeats do not wake
//! the export path).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use meshdns_proto::model::{Hostname, ServiceKey};
use tokio::sync::{Notify, watch};

use super::body::Registration;
use super::error::ApiError;

/// One registered instance: its service and its own id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstanceKey {
    pub service: ServiceKey,
    /// The instance's id (an RFC 1123 label), unique within its service.
    pub instance: Hostname,
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.instance)
    }
}

impl fmt::Debug for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What the export path sees: every live instance.
pub type Live = BTreeMap<InstanceKey, Arc<Registration>>;

/// Capacity limits (`--max-registrations`, `--max-registrations-per-service`,
/// `--max-health-checks`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub registrations: usize,
    pub per_service: usize,
    pub health_checks: usize,
    /// `--max-registrations-per-token`.
    pub per_token: usize,
}

#[derive(Debug)]
struct Entry {
    registration: Arc<Registration>,
    deadline: SystemTime,
}

/// The registrations of one syncer.
#[derive(Debug)]
pub struct Store {
    entries: Mutex<BTreeMap<InstanceKey, Entry>>,
    live: watch::Sender<Arc<Live>>,
    /// Woken on every change, heartbeats included: the state file writer.
    dirty: Notify,
    limits: Limits,
    /// Endpoints the health checker runs checks on now (it sets this).
    pub checks_in_use: Arc<AtomicUsize>,
}

/// What a `PUT` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    /// Re-registered: the same or a changed registration, deadline renewed.
    Renewed,
}

impl Store {
    pub fn new(limits: Limits) -> Self {
        Store {
            entries: Mutex::new(BTreeMap::new()),
            live: watch::Sender::new(Arc::new(Live::new())),
            dirty: Notify::new(),
            limits,
            checks_in_use: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<InstanceKey, Entry>> {
        // A panic while holding the lock leaves a consistent map (every
        // change is one insert or remove): keep serving.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Live>> {
        self.live.subscribe()
    }

    /// Waits until something changed since the last call.
    pub async fn changed(&self) {
        self.dirty.notified().await;
    }

    /// Publishes the live entries: an expired one the sweeper has not
    /// reached yet is never published.
    fn publish(&self, entries: &BTreeMap<InstanceKey, Entry>) {
        let now = SystemTime::now();
        let live: Live = entries
            .iter()
            .filter(|(_, e)| e.deadline > now)
            .map(|(k, e)| (k.clone(), e.registration.clone()))
            .collect();
        self.live.send_replace(Arc::new(live));
    }

    /// Registers or re-registers `key`, living until `now + ttl`.
    pub fn put(
        &self,
        key: InstanceKey,
        registration: Registration,
        now: SystemTime,
    ) -> Result<Put, ApiError> {
        let deadline = now + registration.ttl;
        let mut entries = self.lock();
        let existing = entries.get(&key).filter(|e| e.deadline > now);
        if let Some(e) = existing {
            owned_by(&key, e, &registration.owner)?;
        }
        let siblings = entries.iter().filter(|(k, e)| {
            k.service == key.service && k.instance != key.instance && e.deadline > now
        });
        let mut count = 0;
        for (other_key, other) in siblings {
            count += 1;
            let other = &other.registration;
            if other.ports != registration.ports {
                return Err(ApiError::Conflict {
                    field: "ports".into(),
                    why: format!(
                        "instance {} of {} registered other ports; every instance of a service registers the same ports",
                        other_key.instance, key.service
                    ),
                });
            }
            if other.health_check != registration.health_check {
                return Err(ApiError::Conflict {
                    field: "health_check".into(),
                    why: format!(
                        "instance {} of {} registered another health check; a service has one",
                        other_key.instance, key.service
                    ),
                });
            }
            if let Some(host) = &registration.endpoint.hostname
                && other.endpoint.hostname.as_ref() == Some(host)
            {
                return Err(ApiError::Conflict {
                    field: "hostname".into(),
                    why: format!("{host} is instance {}'s hostname", other_key.instance),
                });
            }
            if let Some((i, address)) = registration
                .endpoint
                .addresses
                .iter()
                .enumerate()
                .find(|(_, a)| other.endpoint.addresses.contains(a))
            {
                return Err(ApiError::Conflict {
                    field: format!("addresses[{i}]"),
                    why: format!("{address} is registered by instance {}", other_key.instance),
                });
            }
        }
        if existing.is_none() {
            if count >= self.limits.per_service {
                return Err(ApiError::Full {
                    field: "instance".into(),
                    why: format!(
                        "{} has {count} registrations, the limit (--max-registrations-per-service)",
                        key.service
                    ),
                });
            }
            let mine = entries
                .values()
                .filter(|e| e.deadline > now && e.registration.owner == registration.owner)
                .count();
            if !registration.owner.is_empty() && mine >= self.limits.per_token {
                return Err(ApiError::Full {
                    field: "instance".into(),
                    why: format!(
                        "this token holds {mine} registrations, the limit (--max-registrations-per-token)"
                    ),
                });
            }
            let total = entries.values().filter(|e| e.deadline > now).count();
            if total >= self.limits.registrations {
                return Err(ApiError::Full {
                    field: "instance".into(),
                    why: format!(
                        "this syncer holds {total} registrations, the limit (--max-registrations)"
                    ),
                });
            }
            if registration.health_check.is_some()
                && self.checks_in_use.load(Ordering::Relaxed) >= self.limits.health_checks
            {
                return Err(ApiError::Full {
                    field: "health_check".into(),
                    why: format!(
                        "this syncer runs {} health checks, the limit (--max-health-checks)",
                        self.limits.health_checks
                    ),
                });
            }
        }
        let same = existing.is_some_and(|e| *e.registration == registration);
        let outcome = if existing.is_some() {
            Put::Renewed
        } else {
            Put::Created
        };
        match entries.get_mut(&key) {
            Some(entry) if same => entry.deadline = deadline,
            _ => {
                entries.insert(
                    key,
                    Entry {
                        registration: Arc::new(registration),
                        deadline,
                    },
                );
                self.publish(&entries);
            }
        }
        drop(entries);
        self.dirty.notify_one();
        Ok(outcome)
    }

    /// Renews `key`'s deadline by its TTL; its new deadline.
    pub fn heartbeat(
        &self,
        key: &InstanceKey,
        owner: &str,
        now: SystemTime,
    ) -> Result<SystemTime, ApiError> {
        let mut entries = self.lock();
        let entry = entries
            .get_mut(key)
            .filter(|e| e.deadline > now)
            .ok_or_else(|| ApiError::NotFound(key.to_string()))?;
        owned_by(key, entry, owner)?;
        entry.deadline = now + entry.registration.ttl;
        let deadline = entry.deadline;
        drop(entries);
        self.dirty.notify_one();
        Ok(deadline)
    }

    pub fn remove(&self, key: &InstanceKey, owner: &str) -> Result<(), ApiError> {
        let mut entries = self.lock();
        let entry = entries
            .get(key)
            .ok_or_else(|| ApiError::NotFound(key.to_string()))?;
        owned_by(key, entry, owner)?;
        entries.remove(key);
        self.publish(&entries);
        drop(entries);
        self.dirty.notify_one();
        Ok(())
    }

    /// Withdraws every registration whose deadline passed; how many.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, e| e.deadline > now);
        let lapsed = before - entries.len();
        if lapsed > 0 {
            self.publish(&entries);
            drop(entries);
            self.dirty.notify_one();
        }
        lapsed
    }

    /// Takes a registration loaded from the state file as it was, deadline
    /// included (no limit applies: they held before the restart).
    pub fn restore(&self, key: InstanceKey, registration: Registration, deadline: SystemTime) {
        let mut entries = self.lock();
        entries.insert(
            key,
            Entry {
                registration: Arc::new(registration),
                deadline,
            },
        );
        self.publish(&entries);
    }

    /// Every registration with its deadline, `visible` ones only.
    pub fn list(
        &self,
        mut visible: impl FnMut(&InstanceKey) -> bool,
    ) -> Vec<(InstanceKey, Arc<Registration>, SystemTime)> {
        self.lock()
            .iter()
            .filter(|(k, _)| visible(k))
            .map(|(k, e)| (k.clone(), e.registration.clone(), e.deadline))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Only the token that registered an instance may change it (an
/// unowned, restored one is anyone's in scope).
fn owned_by(key: &InstanceKey, entry: &Entry, owner: &str) -> Result<(), ApiError> {
    let held = &entry.registration.owner;
    if held.is_empty() || held == owner {
        Ok(())
    } else {
        Err(ApiError::NotOwner(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::body::{RegistrationBody, TtlBounds};
    use meshdns_proto::model::{Namespace, ServiceName};
    use std::time::Duration;

    fn key(service: &str, instance: &str) -> InstanceKey {
        InstanceKey {
            service: ServiceKey {
                namespace: Namespace::new("shop").unwrap(),
                name: ServiceName::new(service).unwrap(),
            },
            instance: Hostname::new(instance).unwrap(),
        }
    }

    fn reg(address: &str, port: u16, check: Option<&str>) -> Registration {
        let mut body = serde_json::json!({
            "addresses": [address], "ports": [{"port": port}], "ttl_seconds": 10,
        });
        if let Some(check) = check {
            body["health_check"] = check.into();
        }
        let body: RegistrationBody = serde_json::from_value(body).unwrap();
        let bounds = TtlBounds {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        body.validate(
            &key("web", "x").service,
            bounds,
            meshdns_proto::model::DEFAULT_WEIGHT,
        )
        .unwrap()
    }

    fn code(result: Result<Put, ApiError>) -> (u16, Option<String>) {
        let e = result.unwrap_err();
        (e.status().as_u16(), e.field().map(str::to_owned))
    }

    #[test]
    fn limits_conflicts_and_deadlines() {
        let store = Store::new(Limits {
            registrations: 3,
            per_service: 2,
            health_checks: 1,
            per_token: 10,
        });
        let now = SystemTime::now();
        assert_eq!(
            store.put(key("web", "a"), reg("10.0.0.1", 80, None), now),
            Ok(Put::Created)
        );
        assert_eq!(
            store.put(key("web", "a"), reg("10.0.0.1", 80, None), now),
            Ok(Put::Renewed)
        );
        let f = |s: &str| Some(s.to_owned());
        // Same address, other ports, other check: 409 naming the field.
        assert_eq!(
            code(store.put(key("web", "b"), reg("10.0.0.1", 80, None), now)),
            (409, f("addresses[0]"))
        );
        assert_eq!(
            code(store.put(key("web", "b"), reg("10.0.0.2", 81, None), now)),
            (409, f("ports"))
        );
        assert_eq!(
            code(store.put(key("web", "b"), reg("10.0.0.2", 80, Some("tcp:80")), now)),
            (409, f("health_check"))
        );
        assert_eq!(
            store.put(key("web", "b"), reg("10.0.0.2", 80, None), now),
            Ok(Put::Created)
        );
        // Per service, then per syncer.
        assert_eq!(
            code(store.put(key("web", "c"), reg("10.0.0.3", 80, None), now)),
            (429, f("instance"))
        );
        assert_eq!(
            store.put(key("db", "a"), reg("10.0.0.4", 80, None), now),
            Ok(Put::Created)
        );
        assert_eq!(
            code(store.put(key("api", "a"), reg("10.0.0.5", 80, None), now)),
            (429, f("instance"))
        );
        // The health-check cap.
        store.remove(&key("db", "a"), "").unwrap();
        store.checks_in_use.store(1, Ordering::Relaxed);
        assert_eq!(
            code(store.put(key("api", "a"), reg("10.0.0.5", 80, Some("tcp:80")), now)),
            (429, f("health_check"))
        );
        // Deadlines: a heartbeat renews; past the deadline, 404 and swept.
        let later = now + Duration::from_secs(8);
        store.heartbeat(&key("web", "a"), "", later).unwrap();
        let after = now + Duration::from_secs(12);
        assert_eq!(store.sweep(after), 1, "only web/b lapsed");
        assert_eq!(
            code(
                store
                    .heartbeat(&key("web", "b"), "", after)
                    .map(|_| Put::Renewed)
            ),
            (404, None)
        );
        assert_eq!(store.subscribe().borrow().len(), 1);
    }

    /// Finding 9: an expired, unswept entry is not republished when
    /// another instance changes.
    #[test]
    fn expired_entries_are_never_published() {
        let store = Store::new(Limits {
            registrations: 10,
            per_service: 10,
            health_checks: 10,
            per_token: 10,
        });
        let long_ago = SystemTime::now() - Duration::from_secs(60);
        store
            .put(key("web", "old"), reg("10.0.0.1", 80, None), long_ago)
            .unwrap();
        store
            .put(
                key("web", "new"),
                reg("10.0.0.2", 80, None),
                SystemTime::now(),
            )
            .unwrap();
        let live = store.subscribe().borrow().clone();
        assert_eq!(live.keys().collect::<Vec<_>>(), vec![&key("web", "new")]);
    }

    /// Finding 7: another token (even in scope) may not change an
    /// instance; one token cannot take every registration.
    #[test]
    fn instances_have_an_owner_and_tokens_a_quota() {
        let store = Store::new(Limits {
            registrations: 10,
            per_service: 10,
            health_checks: 10,
            per_token: 2,
        });
        let now = SystemTime::now();
        let owned = |address: &str, owner: &str| Registration {
            owner: owner.into(),
            ..reg(address, 80, None)
        };
        store
            .put(key("web", "a"), owned("10.0.0.1", "alice"), now)
            .unwrap();
        let denied = |r: Result<(), ApiError>| r.unwrap_err().status().as_u16();
        assert_eq!(
            denied(
                store
                    .put(key("web", "a"), owned("10.0.0.1", "mallory"), now)
                    .map(|_| ())
            ),
            403
        );
        assert_eq!(
            denied(
                store
                    .heartbeat(&key("web", "a"), "mallory", now)
                    .map(|_| ())
            ),
            403
        );
        assert_eq!(denied(store.remove(&key("web", "a"), "mallory")), 403);
        store.heartbeat(&key("web", "a"), "alice", now).unwrap();
        store
            .put(key("web", "b"), owned("10.0.0.2", "alice"), now)
            .unwrap();
        assert_eq!(
            denied(
                store
                    .put(key("web", "c"), owned("10.0.0.3", "alice"), now)
                    .map(|_| ())
            ),
            429
        );
        store
            .put(key("web", "c"), owned("10.0.0.3", "bob"), now)
            .unwrap();
        store.remove(&key("web", "a"), "alice").unwrap();
    }
}
