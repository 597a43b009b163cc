//! The plan of a segmented download: which bytes each connection is responsible for. Work is
//! cut into pieces up front; a connection that finishes its piece takes the next unassigned one,
//! or else the rest of the running piece that is best split (work stealing). Time is an argument
//! (`claim(worker, now, min_tail)`), so the stealing rules are tested deterministically.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A running piece whose speed is not known yet is split only while at least this much of it
/// remains.
const STEAL_MIN_BYTES: u64 = 2 << 20;
/// Once a piece's speed is known, it is split while its rest would take at least `min_tail`
/// (see `Engine::min_tail`) to arrive, down to this size: at the end of a download from a
/// server that limits each connection's rate, the last slow megabytes decide the finish time,
/// and a new request for half of them gets them sooner (a fresh request also starts with the
/// server's per-request allowance).
const STEAL_FLOOR_BYTES: u64 = 256 << 10;
/// How long a piece must have run before its speed is trusted.
const RATE_WINDOW: Duration = Duration::from_millis(200);
/// The shortest tail worth a new request, whatever the latency seen. A piece that has not
/// moved for this long while another connection is idle is taken over whole.
pub(super) const MIN_TAIL: Duration = Duration::from_millis(50);
/// Which bytes each connection is responsible for.
pub(super) struct Plan {
    state: Mutex<PlanState>,
    /// Woken when a piece is taken over or finished, so a connection waiting on a stalled
    /// answer notices that its piece is gone, and an idle one that there is nothing left.
    pub(super) changed: tokio::sync::Notify,
}

struct PlanState {
    /// Pieces nobody works on yet, in file order.
    pending: VecDeque<(u64, u64)>,
    /// The piece of each connection: the next byte it expects, and where it must stop.
    active: HashMap<usize, Span>,
    /// Bytes of the file on disk or received so far.
    received: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) next: u64,
    pub(super) end: u64,
    /// Where this worker started on the piece, and when: its speed so far.
    from: u64,
    since: Instant,
    /// When the piece last moved.
    moved: Instant,
}

impl Span {
    fn new(next: u64, end: u64, now: Instant) -> Self {
        Self {
            next,
            end,
            from: next,
            since: now,
            moved: now,
        }
    }

    /// Where an idle connection may cut this piece to take the rest, if that can end the
    /// download sooner: all of it when the piece has not moved for `min_tail` (a stalled
    /// answer, or a server that sends in bursts with long pauses); its second half when the
    /// rest would take at least `min_tail` at the piece's speed so far (or, before that speed
    /// is known, when at least `STEAL_MIN_BYTES` remain).
    fn split_point(&self, now: Instant, min_tail: Duration) -> Option<u64> {
        let remaining = self.end.saturating_sub(self.next);
        if remaining == 0 {
            return None;
        }
        if now.saturating_duration_since(self.moved) >= min_tail {
            return Some(self.next);
        }
        let middle = self.next + remaining / 2;
        let elapsed = now.saturating_duration_since(self.since);
        let received = self.next - self.from;
        if elapsed < RATE_WINDOW || received == 0 {
            return (remaining >= STEAL_MIN_BYTES).then_some(middle);
        }
        let rest = elapsed.mul_f64(remaining as f64 / received as f64);
        (remaining >= STEAL_FLOOR_BYTES && rest >= min_tail).then_some(middle)
    }
}

impl Plan {
    /// Cuts `gaps` into about `pieces` pieces of similar size, in file order.
    pub(super) fn new(gaps: &[(u64, u64)], pieces: usize, already: u64) -> Self {
        let remaining: u64 = gaps.iter().map(|(s, e)| e - s).sum();
        let target = remaining.div_ceil(pieces.max(1) as u64).max(1);
        let mut pending = VecDeque::new();
        for &(start, end) in gaps {
            let mut cursor = start;
            while cursor < end {
                let cut = if end - cursor < target + target / 2 {
                    end
                } else {
                    cursor + target
                };
                pending.push_back((cursor, cut));
                cursor = cut;
            }
        }
        Self {
            state: Mutex::new(PlanState {
                pending,
                active: HashMap::new(),
                received: already,
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PlanState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives `worker` a new piece: the next unassigned one, or the rest of the running piece
    /// that is best split (see `Span::split_point`; the largest rest first). `None` when
    /// there is nothing worth taking now.
    pub(super) fn claim(&self, worker: usize, now: Instant, min_tail: Duration) -> Option<Span> {
        let mut state = self.lock();
        if let Some((next, end)) = state.pending.pop_front() {
            let span = Span::new(next, end, now);
            state.active.insert(worker, span);
            return Some(span);
        }
        let (victim, cut, end) = state
            .active
            .iter()
            .filter(|(other, _)| **other != worker)
            .filter_map(|(other, span)| {
                span.split_point(now, min_tail)
                    .map(|cut| (*other, cut, span.end))
            })
            .max_by_key(|(_, cut, end)| end - cut)?;
        if let Some(span) = state.active.get_mut(&victim) {
            span.end = cut;
        }
        let span = Span::new(cut, end, now);
        state.active.insert(worker, span);
        drop(state);
        self.changed.notify_waiters();
        Some(span)
    }

    /// Bytes of the file on disk or received so far.
    pub(super) fn received(&self) -> u64 {
        self.lock().received
    }

    /// Whether a piece waits for a connection.
    pub(super) fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// Whether a connection other than `worker` still has bytes to receive.
    pub(super) fn others_running(&self, worker: usize) -> bool {
        self.lock()
            .active
            .iter()
            .any(|(other, span)| *other != worker && span.next < span.end)
    }

    pub(super) fn span(&self, worker: usize) -> Option<Span> {
        self.lock().active.get(&worker).copied()
    }

    /// Records that `worker` has received everything below `position`; returns where it must
    /// stop now (a thief may have taken the rest) and the file's received total.
    pub(super) fn advance(&self, worker: usize, position: u64, now: Instant) -> (u64, u64) {
        let mut state = self.lock();
        let Some(span) = state.active.get_mut(&worker) else {
            return (position, state.received);
        };
        // A chunk may cross an end that a thief just moved: its bytes past the end are the
        // thief's (the same bytes, written twice) and are not counted twice.
        let gained = position.min(span.end).saturating_sub(span.next);
        if gained > 0 {
            span.moved = now;
        }
        span.next = span.next.max(position);
        let end = span.end;
        state.received += gained;
        (end, state.received)
    }

    /// The worker completed its piece.
    pub(super) fn finish(&self, worker: usize) {
        self.lock().active.remove(&worker);
        self.changed.notify_waiters();
    }

    /// Whether `worker` has received anything of its current piece.
    pub(super) fn flowing(&self, worker: usize) -> bool {
        self.lock()
            .active
            .get(&worker)
            .is_some_and(|span| span.next > span.from)
    }

    /// Ends `worker`'s piece where it is: the rest goes back to the queue for the others, and
    /// the worker, woken, sees its piece done.
    pub(super) fn retire(&self, worker: usize) {
        let mut state = self.lock();
        if let Some(span) = state.active.get_mut(&worker)
            && span.next < span.end
        {
            let rest = (span.next, span.end);
            span.end = span.next;
            state.pending.push_front(rest);
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// The worker gives up its piece; what it did not receive goes back to the queue.
    pub(super) fn release(&self, worker: usize) {
        let mut state = self.lock();
        if let Some(span) = state.active.remove(&worker)
            && span.next < span.end
        {
            state.pending.push_front((span.next, span.end));
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// Gives `worker`, whose answer goes on past `position`, the first waiting piece at or
    /// after `position`: it reads on instead of asking again (the bytes in between are not
    /// its to keep). For a server that refuses ranges, this is how one plain answer finishes
    /// the file.
    pub(super) fn extend(&self, worker: usize, position: u64, now: Instant) -> Option<Span> {
        let mut state = self.lock();
        let index = state
            .pending
            .iter()
            .enumerate()
            .filter(|(_, (start, _))| *start >= position)
            .min_by_key(|(_, (start, _))| *start)
            .map(|(index, _)| index)?;
        let (next, end) = state.pending.remove(index)?;
        let span = Span::new(next, end, now);
        state.active.insert(worker, span);
        Some(span)
    }

    pub(super) fn is_complete(&self) -> bool {
        let state = self.lock();
        state.pending.is_empty() && state.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_cut_into_similar_pieces_in_file_order() {
        let plan = Plan::new(&[(0, 100)], 4, 0);
        let pieces: Vec<(u64, u64)> = plan.lock().pending.iter().copied().collect();
        assert_eq!(pieces, vec![(0, 25), (25, 50), (50, 75), (75, 100)]);
        let plan = Plan::new(&[(0, 10), (50, 100)], 2, 40);
        let pieces: Vec<(u64, u64)> = plan.lock().pending.iter().copied().collect();
        assert_eq!(pieces, vec![(0, 10), (50, 80), (80, 100)]);
        assert_eq!(plan.lock().received, 40);
    }

    #[test]
    fn a_free_connection_steals_half_of_the_largest_running_piece() {
        let size = 64 << 20;
        let plan = Plan::new(&[(0, size)], 2, 0);
        let now = Instant::now();
        let first = plan.claim(0, now, MIN_TAIL).unwrap();
        let second = plan.claim(1, now, MIN_TAIL).unwrap();
        assert_eq!((first.next, first.end), (0, size / 2));
        assert_eq!((second.next, second.end), (size / 2, size));
        plan.advance(1, size, now);
        plan.finish(1);
        plan.advance(0, 8 << 20, now);
        let stolen = plan.claim(1, now, MIN_TAIL).unwrap();
        let middle = (8 << 20) + ((size / 2) - (8 << 20)) / 2;
        assert_eq!((stolen.next, stolen.end), (middle, size / 2));
        assert_eq!(
            plan.span(0).unwrap().end,
            middle,
            "the victim stops at the middle"
        );
    }

    #[test]
    fn a_stalled_piece_is_taken_over_whole() {
        let start = Instant::now();
        let plan = Plan::new(&[(0, 4 << 20)], 1, 0);
        plan.claim(0, start, MIN_TAIL).unwrap();
        plan.advance(0, 3 << 20, start);
        let moved = plan.span(0).unwrap().moved;
        assert!(
            plan.claim(1, moved + MIN_TAIL / 2, MIN_TAIL).is_none(),
            "a short pause is no stall, and 1 MiB at this speed is not worth a request"
        );
        let taken = plan.claim(1, moved + MIN_TAIL, MIN_TAIL).unwrap();
        assert_eq!((taken.next, taken.end), (3 << 20, 4 << 20));
        assert_eq!(
            plan.span(0).unwrap().end,
            3 << 20,
            "the stalled piece ends here"
        );
        assert!(plan.others_running(0));
        assert!(!plan.others_running(1));
    }

    #[test]
    fn a_reader_extends_into_the_next_waiting_piece_after_its_position() {
        let now = Instant::now();
        let plan = Plan::new(&[(0, 400)], 4, 0);
        for worker in 0..4 {
            plan.claim(worker, now, MIN_TAIL).unwrap();
        }
        plan.advance(2, 210, now);
        plan.release(3);
        plan.release(2);
        plan.advance(0, 100, now);
        plan.finish(0);
        let next = plan.extend(0, 100, now).unwrap();
        assert_eq!((next.next, next.end), (210, 300), "the nearest piece ahead");
        let last = plan.extend(0, 300, now).unwrap();
        assert_eq!((last.next, last.end), (300, 400));
        assert!(plan.extend(0, 400, now).is_none());
    }

    #[test]
    fn a_retired_connections_rest_goes_to_the_next_free_one() {
        let plan = Plan::new(&[(0, 100 << 20)], 1, 0);
        let now = Instant::now();
        plan.claim(0, now, MIN_TAIL).unwrap();
        // A trial takes the second half, receives a little, and is retired.
        let stolen = plan.claim(1, now, MIN_TAIL).unwrap();
        assert_eq!((stolen.next, stolen.end), (50 << 20, 100 << 20));
        plan.advance(1, (50 << 20) + 1000, now);
        assert!(plan.flowing(1));
        plan.retire(1);
        let retired = plan.span(1).unwrap();
        assert_eq!(retired.next, retired.end);
        plan.finish(1);
        plan.advance(0, 50 << 20, now);
        plan.finish(0);
        let rest = plan.claim(0, now, MIN_TAIL).unwrap();
        assert_eq!((rest.next, rest.end), ((50 << 20) + 1000, 100 << 20));
    }

    #[test]
    fn small_remainders_are_not_stolen_and_released_pieces_return() {
        let now = Instant::now();
        let plan = Plan::new(&[(0, STEAL_MIN_BYTES)], 1, 0);
        plan.claim(0, now, MIN_TAIL).unwrap();
        plan.advance(0, 1, now);
        assert!(
            plan.claim(1, now, MIN_TAIL).is_none(),
            "too little left to split"
        );
        plan.release(0);
        let again = plan.claim(1, now, MIN_TAIL).unwrap();
        assert_eq!((again.next, again.end), (1, STEAL_MIN_BYTES));
        assert!(!plan.is_complete());
        plan.advance(1, STEAL_MIN_BYTES, now);
        plan.finish(1);
        assert!(plan.is_complete());
    }

    #[test]
    fn a_slow_pieces_tail_is_split_and_a_fast_ones_is_not() {
        let start = Instant::now();
        let size: u64 = 16 << 20;
        let plan = Plan::new(&[(0, size)], 1, 0);
        plan.claim(0, start, MIN_TAIL).unwrap();
        // 15 MiB in 1 s: the last MiB takes about 67 ms, longer than a request is worth.
        let later = start + Duration::from_secs(1);
        plan.advance(0, size - (1 << 20), later);
        let stolen = plan.claim(1, later, MIN_TAIL).unwrap();
        assert_eq!(stolen.end, size);
        assert_eq!(stolen.next, size - (1 << 19));
        plan.finish(1);
        // The same MiB after 15 MiB in 0.3 s arrives in 20 ms: not worth a request.
        let plan = Plan::new(&[(0, size)], 1, 0);
        plan.claim(0, start, MIN_TAIL).unwrap();
        let soon = start + Duration::from_millis(300);
        plan.advance(0, size - (1 << 20), soon);
        assert!(plan.claim(1, soon, MIN_TAIL).is_none());
        // Nor is a slow piece's tail below the floor.
        let plan = Plan::new(&[(0, size)], 1, 0);
        plan.claim(0, start, MIN_TAIL).unwrap();
        let slowly = start + Duration::from_secs(60);
        plan.advance(0, size - STEAL_FLOOR_BYTES + 1, slowly);
        assert!(plan.claim(1, slowly, MIN_TAIL).is_none());
    }
}
