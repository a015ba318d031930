//! The fake API server's state, as etcd and the apiserver keep it: one
//! cluster-wide resourceVersion sequence, the objects, the event history
//! back to the compaction point, open watches, and LIST snapshots behind
//! continue tokens.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;

use axum::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::objects::Res;
use super::selector::LabelSelector;

pub type Line = Result<Bytes, Infallible>;

pub struct Watcher {
    pub res: Res,
    pub namespace: Option<String>,
    pub selector: LabelSelector,
    pub tx: mpsc::Sender<Line>,
    /// Ends the watch's stream (its timer task holds a sender too).
    pub end: CancellationToken,
    /// The resourceVersion of the last event sent (bookmarks never go back).
    pub sent: u64,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.end.cancel();
    }
}

pub struct LogEntry {
    pub rv: u64,
    pub res: Res,
    pub kind: &'static str,
    pub object: Value,
    pub previous: Option<Value>,
}

/// A LIST in pages: every object of the resource at `rv`, in storage
/// order, unfiltered (each page is cut first and filtered after, as etcd
/// pages are, so a page can be short or empty and still continue).
pub struct Paging {
    pub res: Res,
    pub namespace: Option<String>,
    pub rv: u64,
    pub items: Vec<Value>,
}

#[derive(Default)]
pub struct Store {
    pub rv: u64,
    pub objects: HashMap<Res, BTreeMap<(String, String), Value>>,
    pub log: Vec<LogEntry>,
    /// History up to here is gone: a watch from an older resourceVersion,
    /// or a continue token from before it, gets 410.
    pub compacted: u64,
    pub watchers: Vec<Watcher>,
    pub pagings: HashMap<u64, Paging>,
    /// Most items a LIST page holds, whatever `limit` asks (a server may
    /// return fewer than asked).
    pub page_cap: Option<usize>,
    pub next_paging: u64,
    /// Refuses every request with 503 (its port is closed too).
    pub down: bool,
    /// The multicluster.x-k8s.io group is served (the MCS CRDs installed).
    pub mcs: bool,
    /// (resource, verb) the ServiceAccount may not do.
    pub forbidden: HashSet<(Res, &'static str)>,
    /// Whether the bearer token is accepted.
    pub credentials_ok: bool,
    /// LIST and WATCH requests served.
    pub requests: u64,
    /// LIST pages served with a continue token.
    pub continued_pages: u64,
    /// Watches refused or ended with 410.
    pub gone: u64,
    /// The next continue request finds its token compacted away.
    pub compact_before_next_page: bool,
    /// Continue tokens refused with 410.
    pub expired_continues: u64,
    /// HTTP versions requests came in.
    pub versions: HashSet<String>,
    /// Writes accepted (create, update, delete), in order.
    pub writes: Vec<Write>,
    /// Every write request, accepted or refused, in order.
    pub attempts: Vec<Attempt>,
}

/// One write request (POST, PUT, PATCH, DELETE) and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// `create`, `update`, `patch` or `delete`.
    pub verb: &'static str,
    pub path: String,
    /// The object's name (from the body of a create).
    pub name: String,
    /// The HTTP status code answered.
    pub code: u16,
}

/// One accepted write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// `create`, `update` or `delete`.
    pub verb: &'static str,
    pub res: Res,
    pub namespace: String,
    pub name: String,
    /// Through the status subresource.
    pub status: bool,
}

pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn namespace_of(obj: &Value) -> String {
    obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The ERROR event a watch from a compacted resourceVersion gets.
pub fn gone_event(from: u64, compacted: u64) -> Bytes {
    event_line(
        "ERROR",
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from} ({compacted})"),
            "reason": "Expired", "code": 410
        }),
    )
}

impl Store {
    pub fn matches(w: &Watcher, res: Res, obj: &Value) -> bool {
        w.res == res
            && w.namespace
                .as_ref()
                .is_none_or(|ns| *ns == namespace_of(obj))
            && w.selector.matches(&labels(obj))
    }

    /// The event a watcher sees for a change, with selector transitions:
    /// an object that stops (starts) matching is sent as DELETED (ADDED).
    pub fn view(w: &Watcher, entry: &LogEntry) -> Option<Bytes> {
        let now = Self::matches(w, entry.res, &entry.object);
        let before = entry
            .previous
            .as_ref()
            .is_some_and(|p| Self::matches(w, entry.res, p));
        match (entry.kind, before, now) {
            ("DELETED", _, true) => Some(event_line("DELETED", &entry.object)),
            ("MODIFIED", true, true) => Some(event_line("MODIFIED", &entry.object)),
            ("MODIFIED", false, true) | ("ADDED", _, true) => {
                Some(event_line("ADDED", &entry.object))
            }
            ("MODIFIED", true, false) => Some(event_line("DELETED", &entry.object)),
            _ => None,
        }
    }

    pub fn record(&mut self, res: Res, kind: &'static str, object: Value, previous: Option<Value>) {
        let entry = LogEntry {
            rv: self.rv,
            res,
            kind,
            object,
            previous,
        };
        let rv = self.rv;
        self.watchers.retain_mut(|w| match Self::view(w, &entry) {
            Some(line) => {
                w.sent = rv;
                w.tx.try_send(Ok(line)).is_ok()
            }
            None => !w.tx.is_closed(),
        });
        self.log.push(entry);
    }

    /// Drops the history up to the current resourceVersion, as etcd's
    /// compaction does: open watches go on, but a watch from an older
    /// resourceVersion, or a continue token from before, gets 410.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.log.clear();
        let compacted = self.compacted;
        self.pagings.retain(|_, p| p.rv >= compacted);
    }

    /// Every object of `res` (in `namespace`) in storage order.
    pub fn snapshot(&self, res: Res, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .get(&res)
            .map(|objs| {
                objs.values()
                    .filter(|o| namespace.is_none_or(|ns| ns == namespace_of(o)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}
