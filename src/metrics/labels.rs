//! [`LabelGuard`]: bounds the label values that come from requests (plant and equipment ids):
//! configured allow-lists, else the first N distinct values; the rest collapse into `_other`.

// Fx hashing for maps keyed by label values: their size is bounded by LabelGuard, so crafted
// ids cannot grow a collision chain past that bound.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::RwLock;

use prometheus::IntCounterVec;

use super::{OTHER, UNKNOWN};
use crate::config::LabelsConfig;

/// Bounds the label values that come from requests.
pub struct LabelGuard {
    cfg: LabelsConfig,
    plants: RwLock<HashSet<String>>,
    equipment: RwLock<HashMap<String, HashSet<String>>>,
    pub(super) overflow: IntCounterVec,
}

impl LabelGuard {
    /// A guard by `cfg`, counting collapsed values in `overflow` (by label name).
    pub(super) fn new(cfg: LabelsConfig, overflow: IntCounterVec) -> Self {
        LabelGuard {
            cfg,
            plants: RwLock::new(HashSet::default()),
            equipment: RwLock::new(HashMap::default()),
            overflow,
        }
    }

    /// Whether a plant may use the API at all (only restricted with an allow-list).
    pub fn plant_allowed(&self, plant: &str) -> bool {
        self.cfg.plant_ids.is_empty() || self.cfg.plant_ids.contains(plant)
    }

    /// The label value for a plant id.
    pub fn plant(&self, plant: &str) -> String {
        if !self.cfg.plant_ids.is_empty() {
            return if self.cfg.plant_ids.contains(plant) {
                plant.to_string()
            } else {
                UNKNOWN.to_string()
            };
        }
        if self
            .plants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(plant)
        {
            return plant.to_string();
        }
        let mut w = self.plants.write().unwrap_or_else(|e| e.into_inner());
        if w.contains(plant) || w.len() < self.cfg.max_plants && w.insert(plant.to_string()) {
            return plant.to_string();
        }
        self.overflow.with_label_values(&["plant_id"]).inc();
        OTHER.to_string()
    }

    /// The label value for an equipment id of a plant (whose label value is `plant_label`).
    pub fn equipment(&self, plant_label: &str, equipment: &str) -> String {
        if !self.cfg.equipment_ids.is_empty() {
            if self.cfg.equipment_ids.contains(equipment) {
                return equipment.to_string();
            }
            self.overflow.with_label_values(&["equipment_id"]).inc();
            return OTHER.to_string();
        }
        let known = self
            .equipment
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(plant_label)
            .is_some_and(|s| s.contains(equipment));
        if known {
            return equipment.to_string();
        }
        let mut w = self.equipment.write().unwrap_or_else(|e| e.into_inner());
        let set = w.entry(plant_label.to_string()).or_default();
        if set.contains(equipment)
            || set.len() < self.cfg.max_equipment_per_plant && set.insert(equipment.to_string())
        {
            return equipment.to_string();
        }
        self.overflow.with_label_values(&["equipment_id"]).inc();
        OTHER.to_string()
    }
}
