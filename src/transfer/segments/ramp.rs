//! How many connections a file gets when nobody said (`-x` not given): it starts with one and
//! adds one at a time while each addition raises the file's rate. A fast link is then not split
//! into competing writers that only add system time, while a server that limits each
//! connection's rate gets its connections within a second or so. A trial connection that does
//! not pay is retired: its rest goes back to the others. The first window only warms up: it
//! runs below the steady rate (TCP slow start, the first pages of the file), and a baseline
//! taken from it made trials look like they paid on a fast local link.
//!
//! Time and byte counts are arguments, so the rules are tested deterministically.

use std::time::{Duration, Instant};

/// How long the rate is measured before each decision.
pub(super) const WINDOW: Duration = Duration::from_millis(250);
/// A trial connection is kept when the file's rate rises by at least this factor.
const GAIN: f64 = 1.15;
/// No trial when the rest of the file arrives within this many windows at the current rate:
/// the trial could not pay for itself.
const WORTH_WINDOWS: f64 = 4.0;

/// What the caller does after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Wait,
    /// Open one more connection (a trial).
    Add,
    /// The trial did not raise the rate: retire the connection added last.
    Retire,
}

#[derive(Debug)]
pub(super) struct Ramp {
    cap: usize,
    running: usize,
    /// Where the current window started: when, and the file's received bytes then.
    mark: Option<(Instant, u64)>,
    /// The rate before the trial, in bytes per second.
    baseline: f64,
    /// The first window has passed (it is not measured).
    warm: bool,
    /// A trial connection is open and being measured.
    trial: bool,
    /// No more decisions: the cap is reached or a trial failed.
    settled: bool,
}

impl Ramp {
    /// A ramp from `running` connections up to `cap`.
    pub(super) fn new(running: usize, cap: usize) -> Self {
        Self {
            cap,
            running,
            mark: None,
            baseline: 0.0,
            warm: false,
            trial: false,
            settled: running >= cap,
        }
    }

    pub(super) fn settled(&self) -> bool {
        self.settled
    }

    /// Looks at the file's progress: `received` bytes so far, `remaining` still to come, and
    /// whether the trial connection (if one is open) has started receiving (its window starts
    /// only then, so its request's latency is not held against it).
    pub(super) fn observe(
        &mut self,
        now: Instant,
        received: u64,
        remaining: u64,
        trial_flowing: bool,
    ) -> Step {
        if self.settled {
            return Step::Wait;
        }
        let Some((since, from)) = self.mark else {
            self.mark = Some((now, received));
            return Step::Wait;
        };
        if self.trial && !trial_flowing {
            self.mark = Some((now, received));
            return Step::Wait;
        }
        let elapsed = now.saturating_duration_since(since);
        if elapsed < WINDOW {
            return Step::Wait;
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = received.saturating_sub(from) as f64 / elapsed.as_secs_f64();
        self.mark = Some((now, received));
        if !self.warm {
            self.warm = true;
            return Step::Wait;
        }
        if self.trial {
            self.trial = false;
            if rate < self.baseline * GAIN {
                self.running -= 1;
                self.settled = true;
                return Step::Retire;
            }
        }
        self.baseline = rate;
        if self.running >= self.cap {
            self.settled = true;
            return Step::Wait;
        }
        #[allow(clippy::cast_precision_loss)]
        let rest = remaining as f64;
        if rate > 0.0 && rest / rate < WINDOW.as_secs_f64() * WORTH_WINDOWS {
            return Step::Wait;
        }
        self.trial = true;
        self.running += 1;
        Step::Add
    }

    /// The trial connection could not be opened (the host is busy): try again later.
    pub(super) fn not_added(&mut self) {
        if self.trial {
            self.trial = false;
            self.running -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    /// Feeds `ramp` one window at `rate` bytes per second; returns its step.
    fn window(ramp: &mut Ramp, clock: &mut Instant, received: &mut u64, rate: u64) -> Step {
        *clock += WINDOW;
        *received += rate / 4;
        ramp.observe(*clock, *received, 10_000 * MB, true)
    }

    /// A ramp up to `cap` connections past its first window (which is never measured), with
    /// its clock and the bytes received so far.
    fn warmed(cap: usize) -> (Ramp, Instant, u64) {
        let mut ramp = Ramp::new(1, cap);
        let (mut clock, mut received) = (Instant::now(), 0);
        assert_eq!(ramp.observe(clock, 0, 10_000 * MB, true), Step::Wait);
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 5 * MB),
            Step::Wait
        );
        (ramp, clock, received)
    }

    #[test]
    fn a_slow_first_window_does_not_make_a_fast_links_trial_look_worth_it() {
        // A fast local link: slow start in the first window, then steady; one more
        // connection adds 5% (two cores shared with the server), not 15%.
        let mut ramp = Ramp::new(1, 4);
        let (mut clock, mut received) = (Instant::now(), 0);
        ramp.observe(clock, 0, 10_000 * MB, true);
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 600 * MB),
            Step::Wait,
            "the first window only warms up"
        );
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 1000 * MB),
            Step::Add
        );
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 1050 * MB),
            Step::Retire
        );
        assert!(ramp.settled());
    }

    #[test]
    fn a_link_that_each_connection_speeds_up_gets_every_connection() {
        let (mut ramp, mut clock, mut received) = warmed(4);
        // 16 MB/s per connection: every trial doubles, triples, ... the rate.
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 16 * MB),
            Step::Add
        );
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 32 * MB),
            Step::Add
        );
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 48 * MB),
            Step::Add
        );
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 64 * MB),
            Step::Wait
        );
        assert!(ramp.settled());
    }

    #[test]
    fn a_trial_that_does_not_raise_the_rate_is_retired_and_the_ramp_stops() {
        let (mut ramp, mut clock, mut received) = warmed(4);
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 1000 * MB),
            Step::Add
        );
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 1050 * MB),
            Step::Retire
        );
        assert!(ramp.settled());
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 10 * MB),
            Step::Wait
        );
    }

    #[test]
    fn no_trial_when_the_rest_arrives_soon_anyway() {
        let (mut ramp, clock, received) = warmed(4);
        // 500 MB in a window (2 GB/s) and 1 GB left: half a second, two windows.
        assert_eq!(
            ramp.observe(clock + WINDOW, received + 500 * MB, 1000 * MB, true),
            Step::Wait
        );
        assert!(!ramp.settled());
    }

    #[test]
    fn a_trial_is_measured_from_its_first_byte_not_its_request() {
        let (mut ramp, mut clock, mut received) = warmed(4);
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 16 * MB),
            Step::Add
        );
        // A slow answer: a whole window passes before the trial's first byte.
        clock += WINDOW;
        received += 4 * MB;
        assert_eq!(
            ramp.observe(clock, received, 10_000 * MB, false),
            Step::Wait
        );
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 32 * MB),
            Step::Add
        );
    }

    #[test]
    fn a_busy_host_defers_the_trial() {
        let (mut ramp, mut clock, mut received) = warmed(2);
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 16 * MB),
            Step::Add
        );
        ramp.not_added();
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 16 * MB),
            Step::Add
        );
        assert_eq!(
            window(&mut ramp, &mut clock, &mut received, 32 * MB),
            Step::Wait
        );
        assert!(ramp.settled());
    }
}
