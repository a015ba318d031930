//! Rise/fall thresholds: an endpoint's verdict changes only after `fall`
//! failures (or `rise` passes) in a row, so one lost packet or one slow
//! answer does not flap it in and out of answers.

use meshdns_proto::model::{Failure, Health};

/// One target's verdict and the run of results against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Starts up: a restarted syncer does not withdraw endpoints that were
    /// answering until their checks say so.
    up: bool,
    /// Results in a row that disagree with `up`.
    streak: u8,
    /// The failure that took it down (or the last one seen).
    last_failure: Option<Failure>,
    /// Has any check passed yet (until then it reads as unchecked)?
    passed_once: bool,
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict {
            up: true,
            streak: 0,
            last_failure: None,
            passed_once: false,
        }
    }
}

impl Verdict {
    /// Records one result; true when the verdict flipped.
    pub fn record(&mut self, result: Result<(), Failure>, rise: u8, fall: u8) -> bool {
        match result {
            Ok(()) => self.passed_once = true,
            Err(failure) => self.last_failure = Some(failure),
        }
        let agrees = result.is_ok() == self.up;
        if agrees {
            self.streak = 0;
            return false;
        }
        self.streak = self.streak.saturating_add(1);
        let needed = if self.up { fall } else { rise };
        if self.streak >= needed {
            self.up = !self.up;
            self.streak = 0;
            if self.up {
                self.passed_once = true;
            }
            return true;
        }
        false
    }

    pub fn up(&self) -> bool {
        self.up
    }

    /// What the endpoint carries to the hub.
    pub fn health(&self) -> Health {
        match (self.up, self.passed_once) {
            (false, _) => Health::Failing(self.last_failure.unwrap_or(Failure::Error)),
            (true, true) => Health::Passing,
            (true, false) => Health::Unchecked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: Result<(), Failure> = Err(Failure::Refused);

    #[test]
    fn fall_then_rise_and_flapping_is_damped() {
        let mut v = Verdict::default();
        assert_eq!(v.health(), Health::Unchecked);
        assert!(!v.record(Ok(()), 2, 3));
        assert_eq!(v.health(), Health::Passing);
        // Two failures, then a pass: still up (fall = 3), streak reset.
        assert!(!v.record(FAIL, 2, 3));
        assert!(!v.record(FAIL, 2, 3));
        assert!(!v.record(Ok(()), 2, 3));
        assert!(v.up());
        // Alternating results never flip it.
        for _ in 0..10 {
            assert!(!v.record(FAIL, 2, 3));
            assert!(!v.record(Ok(()), 2, 3));
        }
        assert!(v.up());
        assert!(!v.record(FAIL, 2, 3));
        assert!(!v.record(FAIL, 2, 3));
        assert!(v.record(FAIL, 2, 3));
        assert_eq!(v.health(), Health::Failing(Failure::Refused));
        // Rise = 2: one pass is not enough.
        assert!(!v.record(Ok(()), 2, 3));
        assert!(!v.up());
        assert!(v.record(Ok(()), 2, 3));
        assert_eq!(v.health(), Health::Passing);
    }
}
