//! Per-plant sliding windows of the most recent values (hallucination rate, feedback score).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};

use rustc_hash::FxHashMap as HashMap;

/// A fixed-size window of the most recent values.
struct Window {
    values: VecDeque<f64>,
    cap: usize,
    sum: f64,
}

impl Window {
    fn push(&mut self, v: f64) -> f64 {
        if self.values.len() == self.cap {
            self.sum -= self.values.pop_front().unwrap_or(0.0);
        }
        self.values.push_back(v);
        self.sum += v;
        // Recompute now and then so float drift cannot accumulate.
        if self.values.len() == self.cap && self.values.len() > 1 && self.sum.to_bits() % 64 == 0 {
            self.sum = self.values.iter().sum();
        }
        self.sum / self.values.len() as f64
    }
}

/// Per-plant sliding windows (hallucinations, feedback).
pub(super) struct Windows {
    cap: usize,
    map: RwLock<HashMap<String, Arc<Mutex<Window>>>>,
}

impl Windows {
    pub(super) fn new(cap: usize) -> Self {
        Windows {
            cap,
            map: RwLock::new(HashMap::default()),
        }
    }
    /// Pushes a value into the plant's window and returns the window's mean.
    pub(super) fn push(&self, plant_label: &str, v: f64) -> f64 {
        let existing = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(plant_label)
            .cloned();
        let w = existing.unwrap_or_else(|| {
            let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
            m.entry(plant_label.to_string())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Window {
                        values: VecDeque::with_capacity(self.cap),
                        cap: self.cap,
                        sum: 0.0,
                    }))
                })
                .clone()
        });
        let mut g = w.lock().unwrap_or_else(|e| e.into_inner());
        g.push(v)
    }
}
