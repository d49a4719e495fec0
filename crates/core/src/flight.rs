//! One store load per key and generation at a time in this process.
//!
//! When a hot key's entry expires (its TTL), every request reading it at that moment misses at
//! once. With thousands of connections that was thousands of loads of the same page queued on the
//! store together: in the full benchmark of 2026-12-05 06:06 UTC, at 10 000 connections on the
//! warm page, 8 757 requests outlived the store's deadline (503) and the server held 414 MiB of
//! pages being built. Now the first reader that misses loads; the others that missed under the
//! same generation (or an older one) wait for its entry. That entry is what they would have read
//! from the cache a moment later, under the same rule: its generation is one they read as current
//! or a newer one. A reader that saw a newer generation than the load in flight does not wait (the
//! load may have begun before the write that reader must see): it loads, and later readers wait
//! for it instead.
//!
//! If the loading reader fails or is dropped, the waiting ones load for themselves, as before.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::cache_aside::Entry;

/// The loads in flight, by key.
#[derive(Default)]
pub(crate) struct Flights {
    loading: Mutex<Loading>,
}

#[derive(Default)]
struct Loading {
    by_key: HashMap<String, Flight>,
    started: u64,
}

struct Flight {
    generation: i64,
    /// Which load this is, so that a finished load never removes a newer one's flight.
    id: u64,
    entry: watch::Receiver<Option<Entry>>,
}

/// A reader's part in the load of a key it missed.
pub(crate) enum Turn<'a> {
    /// Load, then hand the entry to the readers waiting for it with [`Lead::finish`].
    Lead(Lead<'a>),
    /// Another reader is loading this key: [`wait`] for its entry.
    Wait(watch::Receiver<Option<Entry>>),
}

/// The reader that loads. Dropped without [`Lead::finish`] (a failed load, a cancelled request),
/// it releases the waiting readers empty-handed.
pub(crate) struct Lead<'a> {
    flights: &'a Flights,
    key: String,
    id: u64,
    generation: i64,
    entry: watch::Sender<Option<Entry>>,
}

impl Flights {
    /// Joins the load of `key` in flight if it was started under `generation` or a newer one;
    /// else starts one.
    pub(crate) fn join(&self, key: &str, generation: i64) -> Turn<'_> {
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = loading.by_key.get(key)
            && flight.generation >= generation
        {
            return Turn::Wait(flight.entry.clone());
        }
        loading.started += 1;
        let id = loading.started;
        let (sender, receiver) = watch::channel(None);
        let flight = Flight {
            generation,
            id,
            entry: receiver,
        };
        loading.by_key.insert(key.to_owned(), flight);
        Turn::Lead(Lead {
            flights: self,
            key: key.to_owned(),
            id,
            generation,
            entry: sender,
        })
    }

    /// How many keys are being loaded now, for tests.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.loading.lock().unwrap().by_key.len()
    }
}

impl Lead<'_> {
    /// The generation this load was started under.
    pub(crate) fn generation(&self) -> i64 {
        self.generation
    }

    /// Hands `entry` to every reader waiting for this load.
    pub(crate) fn finish(self, entry: &Entry) {
        self.entry.send_replace(Some(entry.clone()));
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut loading = self
            .flights
            .loading
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if loading
            .by_key
            .get(&self.key)
            .is_some_and(|f| f.id == self.id)
        {
            loading.by_key.remove(&self.key);
        }
    }
}

/// The entry the loading reader finished with, or `None` if it failed or was dropped.
pub(crate) async fn wait(mut entry: watch::Receiver<Option<Entry>>) -> Option<Entry> {
    loop {
        if let Some(entry) = entry.borrow_and_update().clone() {
            return Some(entry);
        }
        if entry.changed().await.is_err() {
            // The sender is gone; a value it sent just before is still there.
            return entry.borrow().clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leads<'a>(turn: Turn<'a>, why: &str) -> Lead<'a> {
        match turn {
            Turn::Lead(lead) => lead,
            Turn::Wait(_) => panic!("{why}: expected to load, was told to wait"),
        }
    }

    fn waits(turn: Turn<'_>, why: &str) -> watch::Receiver<Option<Entry>> {
        match turn {
            Turn::Wait(loading) => loading,
            Turn::Lead(_) => panic!("{why}: expected to wait, was told to load"),
        }
    }

    fn entry(generation: i64) -> Entry {
        Entry {
            generation,
            cursor: None,
            body: bytes::Bytes::from_static(b"[]"),
        }
    }

    #[tokio::test]
    async fn readers_of_the_same_generation_wait_for_the_first() {
        let flights = Flights::default();
        let lead = leads(flights.join("k", 3), "the first reader loads");
        let same = waits(
            flights.join("k", 3),
            "a reader of the same generation waits",
        );
        let older = waits(
            flights.join("k", 2),
            "a reader of an older generation waits",
        );
        let waiting = tokio::spawn(async move { (wait(same).await, wait(older).await) });
        lead.finish(&entry(3));
        let (same, older) = waiting.await.unwrap();
        assert_eq!(same, Some(entry(3)));
        assert_eq!(older, Some(entry(3)));
        assert_eq!(flights.in_flight(), 0, "a finished load leaves no flight");
    }

    #[tokio::test]
    async fn a_reader_of_a_newer_generation_loads_and_the_older_load_leaves_its_flight() {
        let flights = Flights::default();
        let old = leads(flights.join("k", 3), "the first reader loads");
        let new = leads(
            flights.join("k", 4),
            "a reader that saw a write the load may predate loads itself",
        );
        old.finish(&entry(3));
        let later = waits(flights.join("k", 4), "the newer load is still in flight");
        new.finish(&entry(4));
        assert_eq!(wait(later).await, Some(entry(4)));
        assert!(
            matches!(flights.join("other", 4), Turn::Lead(_)),
            "keys are apart"
        );
    }

    #[tokio::test]
    async fn a_failed_load_releases_its_waiters_empty_handed() {
        let flights = Flights::default();
        let lead = leads(flights.join("k", 1), "the first reader loads");
        let waiter = waits(flights.join("k", 1), "waits");
        drop(lead);
        assert_eq!(wait(waiter).await, None);
        assert!(
            matches!(flights.join("k", 1), Turn::Lead(_)),
            "the next reader loads"
        );
    }
}
