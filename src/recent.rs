//! The bounded window of recent answers that `/v1/feedback` can rate.
//!
//! A rating must refer to an answer the agent really gave: each answer's request id is kept with
//! its plant and agent labels for `feedback_window` or until `capacity` newer answers push it
//! out, whichever comes first. The store is split into shards by request id so concurrent
//! requests rarely meet on one lock. An answer can be rated once.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

const SHARDS: usize = 16;

/// What a rating needs to know about the answer it rates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRecord {
    /// Plant label value (already bounded).
    pub plant: String,
    /// The agent that answered.
    pub agent_name: &'static str,
    /// The question, for a knowledge gap when the answer is rated badly.
    pub question: crate::gaps::Question,
}

/// Outcome of [`RecentAnswers::take`].
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The answer, now marked as rated.
    Found(AnswerRecord),
    /// Never given, expired or pushed out of the window.
    Unknown,
    /// Rated before.
    AlreadyRated,
}

struct Shard {
    map: HashMap<Uuid, (Instant, AnswerRecord, bool)>,
    order: VecDeque<Uuid>,
}

/// Recent answers, bounded in count and age.
pub struct RecentAnswers {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    ttl: Duration,
}

impl RecentAnswers {
    /// A store for about `capacity` answers kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::default(),
                    order: VecDeque::new(),
                })
            })
            .collect();
        RecentAnswers {
            shards,
            per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl,
        }
    }

    fn shard(&self, id: &Uuid) -> std::sync::MutexGuard<'_, Shard> {
        let i = id.as_bytes()[15] as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers an answer.
    pub fn insert(&self, id: Uuid, rec: AnswerRecord, now: Instant) {
        let mut s = self.shard(&id);
        while s.order.len() >= self.per_shard {
            if let Some(old) = s.order.pop_front() {
                s.map.remove(&old);
            }
        }
        s.order.push_back(id);
        s.map.insert(id, (now, rec, false));
    }

    /// Looks an answer up for rating and marks it rated.
    pub fn take(&self, id: &Uuid, now: Instant) -> Lookup {
        let mut s = self.shard(id);
        match s.map.get_mut(id) {
            Some((at, _, _)) if now.saturating_duration_since(*at) > self.ttl => Lookup::Unknown,
            Some((_, _, true)) => Lookup::AlreadyRated,
            Some((_, rec, rated)) => {
                *rated = true;
                Lookup::Found(rec.clone())
            }
            None => Lookup::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> AnswerRecord {
        AnswerRecord {
            plant: "p".into(),
            agent_name: "rag_agent",
            question: crate::gaps::Question::new("p", "e", None, "en", "leak"),
        }
    }

    #[test]
    fn rate_once_within_window() {
        let r = RecentAnswers::new(100, Duration::from_secs(60));
        let id = Uuid::new_v4();
        let t0 = Instant::now();
        r.insert(id, rec(), t0);
        assert_eq!(r.take(&id, t0), Lookup::Found(rec()));
        assert_eq!(r.take(&id, t0), Lookup::AlreadyRated);
        assert_eq!(r.take(&Uuid::new_v4(), t0), Lookup::Unknown);
    }

    #[test]
    fn expires_and_is_bounded() {
        let r = RecentAnswers::new(16, Duration::from_secs(60));
        let t0 = Instant::now();
        let id = Uuid::new_v4();
        r.insert(id, rec(), t0);
        assert_eq!(r.take(&id, t0 + Duration::from_secs(61)), Lookup::Unknown);
        let ids: Vec<Uuid> = (0..1000).map(|_| Uuid::new_v4()).collect();
        for i in &ids {
            r.insert(*i, rec(), t0);
        }
        // The newest answer is still there; the oldest were pushed out; at most ~capacity kept.
        assert_eq!(r.take(ids.last().unwrap(), t0), Lookup::Found(rec()));
        assert_eq!(r.take(&ids[0], t0), Lookup::Unknown);
        let kept = ids
            .iter()
            .filter(|i| r.take(i, t0) != Lookup::Unknown)
            .count();
        assert!((1..=16).contains(&kept), "{kept}");
    }
}
