//! What the cluster logic needs from a shared store: three calls, as OpenSIPS's cachedb API
//! offers them (`add`, `get`, `set`). The FFI layer implements it over a cachedb connection;
//! tests use [`MemoryStore`].

/// A store call that did not give an answer (connection refused, timed out, protocol error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFailed;

pub trait Store: Send {
    /// Adds `delta` to the integer at `key` (a missing key counts as 0) and gives it a life of
    /// `ttl_secs`; returns the new value. Atomic in the store: of two callers adding 1 to a
    /// new key, exactly one sees 1.
    fn add(&mut self, key: &str, delta: i32, ttl_secs: u32) -> Result<i64, StoreFailed>;
    /// The value at `key`, None when there is none.
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreFailed>;
    /// Sets `key` to `value` for `ttl_secs`.
    fn set(&mut self, key: &str, value: &[u8], ttl_secs: u32) -> Result<(), StoreFailed>;
}

/// An in-memory store for tests: shared between "nodes" through an `Arc`, with a switch that
/// makes every call fail and an optional delay per call.
#[cfg(test)]
pub mod memory {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Duration;

    #[derive(Default)]
    pub struct Shared {
        pub values: HashMap<String, (Vec<u8>, u32)>,
        pub down: bool,
        pub delay: Duration,
        pub calls: usize,
    }

    #[derive(Clone, Default)]
    pub struct MemoryStore(pub Arc<Mutex<Shared>>);

    impl MemoryStore {
        /// The store's state (values, switches, call count).
        pub fn state(&self) -> MutexGuard<'_, Shared> {
            self.0.lock().unwrap()
        }

        fn enter(&self) -> Result<(), StoreFailed> {
            let mut s = self.state();
            s.calls += 1;
            if !s.delay.is_zero() {
                std::thread::sleep(s.delay);
            }
            if s.down {
                Err(StoreFailed)
            } else {
                Ok(())
            }
        }
    }

    impl Store for MemoryStore {
        fn add(&mut self, key: &str, delta: i32, ttl_secs: u32) -> Result<i64, StoreFailed> {
            self.enter()?;
            let mut s = self.state();
            let e = s
                .values
                .entry(key.to_string())
                .or_insert_with(|| (b"0".to_vec(), ttl_secs));
            let n: i64 = std::str::from_utf8(&e.0)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or(StoreFailed)?;
            let n = n + i64::from(delta);
            *e = (n.to_string().into_bytes(), ttl_secs);
            Ok(n)
        }

        fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreFailed> {
            self.enter()?;
            Ok(self.state().values.get(key).map(|v| v.0.clone()))
        }

        fn set(&mut self, key: &str, value: &[u8], ttl_secs: u32) -> Result<(), StoreFailed> {
            self.enter()?;
            self.state()
                .values
                .insert(key.to_string(), (value.to_vec(), ttl_secs));
            Ok(())
        }
    }
}
