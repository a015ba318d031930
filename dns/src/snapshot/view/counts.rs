//! Per-chunk health counts: a service's health without visiting its parts.

/// How many parts are live, live with a ready endpoint, and with a ready
/// endpoint at all: what a service's health is decided from.
#[derive(Debug, Default, Clone, Copy)]
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
}
