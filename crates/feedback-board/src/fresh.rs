//! Values read from ClickHouse and shared by every viewer, served stale while they are read
//! again (the `stale-while-revalidate` of RFC 5861).
//!
//! A value younger than its `max_age` is served as is. An older one, up to `stale` old, is
//! served at once while one background task reads it again, so a viewer never waits for
//! ClickHouse once a page has been read; older than `stale` (nobody looked for a while) the
//! caller waits for the new read. Reads of one key never overlap: callers that must wait
//! queue behind the read in flight and take its result.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long values live, fresh and stale.
#[derive(Debug, Clone, Copy)]
pub struct Ages {
    /// Served as is while younger.
    pub max_age: Duration,
    /// Served while read again in the background while younger; waited for when older.
    pub stale: Duration,
}

struct Slot<T> {
    value: Option<(Instant, Arc<T>)>,
    /// Held while a read of this key runs.
    flight: Arc<tokio::sync::Mutex<()>>,
    /// A background read of this key is queued or running.
    refreshing: bool,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            value: None,
            flight: Arc::new(tokio::sync::Mutex::new(())),
            refreshing: false,
        }
    }
}

/// The values of one kind, per key.
pub struct Fresh<K, T> {
    slots: Mutex<HashMap<K, Slot<T>>>,
}

impl<K, T> Default for Fresh<K, T> {
    fn default() -> Self {
        Fresh {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

/// What [`Fresh::lookup`] found.
enum Found<T> {
    Fresh(Arc<T>),
    /// Serve it; `true` when this caller must start the background read.
    Stale(Arc<T>, bool),
    Missing,
}

impl<K, T> Fresh<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    fn lookup(&self, key: &K, ages: Ages) -> Found<T> {
        let mut slots = self.slots.lock().expect("fresh slots");
        let slot = slots.entry(key.clone()).or_default();
        match &slot.value {
            Some((at, v)) if at.elapsed() < ages.max_age => Found::Fresh(v.clone()),
            Some((at, v)) if at.elapsed() < ages.stale => {
                let start = !slot.refreshing;
                slot.refreshing = true;
                Found::Stale(v.clone(), start)
            }
            _ => Found::Missing,
        }
    }

    /// The value of `key`: fresh, stale (and read again in the background), or read now.
    pub async fn get<F, Fut>(
        self: &Arc<Self>,
        key: K,
        ages: Ages,
        read: F,
    ) -> anyhow::Result<Arc<T>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    {
        match self.lookup(&key, ages) {
            Found::Fresh(v) => Ok(v),
            Found::Stale(v, start) => {
                if start {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.read_now(&key, ages, read).await {
                            tracing::warn!("background read failed (the last value is served until it is {:?} old): {e:#}", ages.stale);
                        }
                        if let Some(s) = me.slots.lock().expect("fresh slots").get_mut(&key) {
                            s.refreshing = false;
                        }
                    });
                }
                Ok(v)
            }
            Found::Missing => self.read_now(&key, ages, read).await,
        }
    }

    /// Reads `key` unless a read that finished while this caller queued made it fresh.
    async fn read_now<F, Fut>(&self, key: &K, ages: Ages, read: F) -> anyhow::Result<Arc<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let flight = {
            let mut slots = self.slots.lock().expect("fresh slots");
            slots.entry(key.clone()).or_default().flight.clone()
        };
        let _one_at_a_time = flight.lock().await;
        if let Some((at, v)) = self.current(key) {
            if at.elapsed() < ages.max_age {
                return Ok(v);
            }
        }
        let v = Arc::new(read().await?);
        let mut slots = self.slots.lock().expect("fresh slots");
        slots.entry(key.clone()).or_default().value = Some((Instant::now(), v.clone()));
        Ok(v)
    }

    fn current(&self, key: &K) -> Option<(Instant, Arc<T>)> {
        let slots = self.slots.lock().expect("fresh slots");
        slots.get(key).and_then(|s| s.value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const AGES: Ages = Ages {
        max_age: Duration::from_millis(200),
        stale: Duration::from_millis(1000),
    };

    /// A read that counts itself and returns its number after `delay`.
    fn reader(
        reads: &Arc<AtomicU32>,
        delay: u64,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<u32>> + Send>>
           + Send
           + 'static {
        let reads = reads.clone();
        move || {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                Ok(reads.fetch_add(1, Ordering::SeqCst) + 1)
            })
        }
    }

    #[tokio::test]
    async fn fresh_values_are_served_stale_ones_read_again_in_the_background() {
        let f: Arc<Fresh<&str, u32>> = Arc::default();
        let reads = Arc::new(AtomicU32::new(0));
        // Missing: the caller waits for the first read.
        assert_eq!(*f.get("k", AGES, reader(&reads, 50)).await.unwrap(), 1);
        // Fresh: no read.
        assert_eq!(*f.get("k", AGES, reader(&reads, 50)).await.unwrap(), 1);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Stale: served at once (well before the 300 ms read), one background read for
        // three callers.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let started = Instant::now();
        for _ in 0..3 {
            assert_eq!(*f.get("k", AGES, reader(&reads, 300)).await.unwrap(), 1);
        }
        assert!(started.elapsed() < Duration::from_millis(250));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert_eq!(*f.get("k", AGES, reader(&reads, 50)).await.unwrap(), 2);
        // Too old: the caller waits for a new read.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(*f.get("k", AGES, reader(&reads, 50)).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn concurrent_callers_of_a_missing_value_share_one_read() {
        let f: Arc<Fresh<&str, u32>> = Arc::default();
        let reads = Arc::new(AtomicU32::new(0));
        let calls: Vec<_> = (0..5)
            .map(|_| {
                let f = f.clone();
                let r = reader(&reads, 100);
                tokio::spawn(async move { *f.get("k", AGES, r).await.unwrap() })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), 1);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_background_read_keeps_the_stale_value_until_it_is_too_old() {
        let f: Arc<Fresh<&str, u32>> = Arc::default();
        let reads = Arc::new(AtomicU32::new(0));
        assert_eq!(*f.get("k", AGES, reader(&reads, 0)).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let failing = || async { anyhow::bail!("ClickHouse away") };
        assert_eq!(*f.get("k", AGES, failing).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The failure cleared the background flag: the next stale call tries again.
        assert_eq!(*f.get("k", AGES, reader(&reads, 0)).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        // Too old and failing: the error reaches the caller.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let e = f
            .get("k", AGES, || async { anyhow::bail!("ClickHouse away") })
            .await;
        assert!(format!("{:#}", e.unwrap_err()).contains("ClickHouse away"));
    }
}
