//! One piece of work per key at a time: callers for the same key queue on its gate, and the
//! last one out (also a caller that was cancelled, its client gone) removes the key.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// The gates, by key.
pub(crate) type Gates<K> = Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>;

/// A place in the queue for one key.
pub(crate) struct Gate<'a, K: Eq + Hash> {
    gates: &'a Gates<K>,
    key: K,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl<'a, K: Eq + Hash + Clone> Gate<'a, K> {
    /// Joins the queue for `key`.
    pub(crate) fn enter(gates: &'a Gates<K>, key: K) -> Self {
        let gate = gates
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .clone();
        Gate { gates, key, gate }
    }

    /// Waits for this caller's turn; the turn lasts as long as the guard.
    pub(crate) async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.lock().await
    }
}

impl<K: Eq + Hash> Drop for Gate<'_, K> {
    fn drop(&mut self) {
        let mut gates = self.gates.lock().unwrap();
        // Only the map and this guard hold it: nobody else waits.
        if gates
            .get(&self.key)
            .is_some_and(|g| Arc::strong_count(g) <= 2)
        {
            gates.remove(&self.key);
        }
    }
}
