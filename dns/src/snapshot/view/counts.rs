//! Per-chunk health counts: a service's health without visiting its parts.

/// How many parts are live, live with a ready endpoint, and with a ready
/// endpoint at all: what a service's health is decided from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Counts {
    pub(super) live: u32,
    pub(super) ready_live: u32,
    pub(super) ready: u32,
}

impl Counts {
    pub(super) fn of(stale: bool, has_ready: bool) -> Self {
        Counts {
            live: u32::from(!stale),
            ready_live: u32::from(!stale && has_ready),
            ready: u32::from(has_ready),
        }
    }

    pub(super) fn add(&mut self, other: Counts) {
        self.live += other.live;
        self.ready_live += other.ready_live;
        self.ready += other.ready;
    }

    pub(super) fn remove(&mut self, other: Counts) {
        self.live -= other.live;
        self.ready_live -= other.ready_live;
        self.ready -= other.ready;
    }

    /// The service's health from its parts' counts: whether it fails open
    /// (no live part: every part counts) and whether a counted part has a
    /// ready endpoint.
    pub(super) fn health(self) -> (bool, bool) {
        let fail_open = self.live == 0;
        let any_ready = if fail_open {
            self.ready > 0
        } else {
            self.ready_live > 0
        };
        (fail_open, any_ready)
    }
}
