//! The window of Append messages in flight to one follower in Replicate state, each
//! remembered by the last index it carried. Bounded by `Config::max_inflight_msgs`.

use std::collections::VecDeque;

use super::message::Index;

#[derive(Clone, Debug)]
pub struct Inflights {
    /// Last index of each in-flight Append, increasing.
    last_indexes: VecDeque<Index>,
    capacity: usize,
}

impl Inflights {
    pub fn new(capacity: usize) -> Inflights {
        assert!(capacity > 0, "inflight capacity must be positive");
        Inflights { last_indexes: VecDeque::with_capacity(capacity), capacity }
    }

    /// Records an Append whose entries end at `last_index`.
    ///
    /// # Panics
    /// If the window is full or `last_index` does not increase.
    pub fn add(&mut self, last_index: Index) {
        assert!(!self.full(), "inflights full at capacity {}", self.capacity);
        if let Some(&back) = self.last_indexes.back() {
            assert!(back < last_index, "inflight {last_index} not after {back}");
        }
        self.last_indexes.push_back(last_index);
    }

    /// Frees every Append whose entries end at or below `index` (acknowledged).
    pub fn free_to(&mut self, index: Index) {
        while self.last_indexes.front().is_some_and(|&front| front <= index) {
            self.last_indexes.pop_front();
        }
    }

    /// Frees the oldest Append (a heartbeat response proved the follower alive).
    pub fn free_first_one(&mut self) {
        self.last_indexes.pop_front();
    }

    pub fn full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.last_indexes.len()
    }

    pub fn reset(&mut self) {
        self.last_indexes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_frees_and_resets() {
        let mut inflights = Inflights::new(3);
        inflights.add(2);
        inflights.add(4);
        inflights.add(6);
        assert!(inflights.full());
        inflights.free_to(4);
        assert_eq!(inflights.count(), 1);
        inflights.free_first_one();
        assert_eq!(inflights.count(), 0);
        inflights.add(8);
        inflights.reset();
        assert_eq!(inflights.count(), 0);
    }
}
