//! Typo tolerance: the closest dictionary word within edit distance 1 (words of 5–7 letters) or
//! 2 (8 letters and more), found through a delete-neighbourhood index (the SymSpell idea): each
//! dictionary word is stored with every variant that has one character deleted; a query looks up
//! its own variants with up to two deletions, and candidates are confirmed with the real
//! distance. (Storing one-deletion variants only keeps the index small — about ten entries per
//! word — at the price of missing some two-edit typos, such as a transposition plus a wrong
//! letter; one-edit typos are always found.) Lookups never insert, so crafted input cannot grow it; short words are never
//! corrected (too many real words lie one edit apart).

use std::hash::Hasher;

use super::text::edit_distance;

/// Shortest word that is corrected at all.
pub const MIN_LEN: usize = 5;
/// From this length on, two edits are tolerated.
pub const TWO_EDITS_LEN: usize = 8;

/// A dictionary of words, each with a payload (what the word stands for).
pub struct Speller<T> {
    words: Vec<(Box<str>, T)>,
    /// Hashes of every word and of its one-deletion variants, sorted, and beside them the id of
    /// the word each came from. Only hashes are kept (12 bytes an entry instead of a string and
    /// a list): a collision can only add a candidate, and every candidate is confirmed with the
    /// real edit distance.
    hashes: Vec<u64>,
    ids: Vec<u32>,
    /// `dir[b]` is the first position in `hashes` whose top [`DIR_BITS`] bits are `b` or more,
    /// so a lookup searches one small bucket instead of the whole table.
    dir: Vec<u32>,
}

/// Bits of the hash that pick a bucket (4,096 buckets, 16 KB).
const DIR_BITS: u32 = 12;

fn key(s: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(s.as_bytes());
    h.finish()
}

fn deletes_of(word: &str, out: &mut Vec<String>) {
    let chars: Vec<char> = word.chars().collect();
    for i in 0..chars.len() {
        let mut s = String::with_capacity(word.len());
        s.extend(chars[..i].iter().chain(&chars[i + 1..]));
        out.push(s);
    }
}

impl<T: Clone> Speller<T> {
    /// Builds the index; earlier words win ties, so callers put frequent words first. Words
    /// shorter than [`MIN_LEN`] - 1 are left out (they could never be a correction's target
    /// within the allowed distance of a word long enough to be corrected).
    pub fn new(words: impl IntoIterator<Item = (String, T)>) -> Speller<T> {
        let mut s = Speller {
            words: Vec::new(),
            hashes: Vec::new(),
            ids: Vec::new(),
            dir: Vec::new(),
        };
        let mut pairs: Vec<(u64, u32)> = Vec::new();
        let mut seen = rustc_hash::FxHashSet::default();
        let mut variants = Vec::new();
        for (w, payload) in words {
            if w.chars().count() + 1 < MIN_LEN || !seen.insert(w.clone()) {
                continue;
            }
            let id = s.words.len() as u32;
            variants.clear();
            deletes_of(&w, &mut variants);
            variants.push(w.clone());
            for v in variants.drain(..) {
                pairs.push((key(&v), id));
            }
            s.words.push((w.into_boxed_str(), payload));
        }
        pairs.sort_unstable();
        pairs.dedup();
        (s.hashes, s.ids) = pairs.into_iter().unzip();
        s.dir = (0..=1u64 << DIR_BITS)
            .map(|b| s.hashes.partition_point(|&h| (h >> (64 - DIR_BITS)) < b) as u32)
            .collect();
        s.words.shrink_to_fit();
        s
    }

    /// Ids of the words that have `variant` among their variants (and a few collisions).
    fn ids(&self, variant: &str) -> impl Iterator<Item = u32> + '_ {
        let k = key(variant);
        let b = (k >> (64 - DIR_BITS)) as usize;
        let (lo, hi) = (self.dir[b] as usize, self.dir[b + 1] as usize);
        let bucket = &self.hashes[lo..hi];
        let from = lo + bucket.partition_point(|&h| h < k);
        let to = from + self.hashes[from..hi].partition_point(|&h| h == k);
        self.ids[from..to].iter().copied()
    }

    /// Number of dictionary words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the dictionary is empty.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The payload of `word` itself, when it is in the dictionary.
    pub fn exact(&self, word: &str) -> Option<&T> {
        self.ids(word)
            .map(|id| &self.words[id as usize])
            .find(|(w, _)| &**w == word)
            .map(|(_, payload)| payload)
    }

    /// The closest word to `word` (not `word` itself) within the allowed distance and with the
    /// same first letter, with its payload, or `None`.
    pub fn correct(&self, word: &str) -> Option<(&str, T)> {
        let len = word.chars().count();
        if len < MIN_LEN {
            return None;
        }
        let max = if len >= TWO_EDITS_LEN { 2 } else { 1 };
        let mut best: Option<(usize, u32)> = None;
        let mut probe = |p: &str| {
            for id in self.ids(p) {
                let cand = &self.words[id as usize].0;
                // A typo rarely hits the first letter; a word that differs there is another
                // word ("pails" is not "fails", "rotor" not "motor").
                if &**cand == word || cand.chars().next() != word.chars().next() {
                    continue;
                }
                if best.is_some_and(|(d, b)| d == 1 && id > b) {
                    continue;
                }
                let d = edit_distance(word, cand, max);
                if d <= max && best.map_or(true, |(bd, bid)| (d, id) < (bd, bid)) {
                    best = Some((d, id));
                }
            }
        };
        // The word and its variants with one deletion (and, for long words, two deletions at
        // positions i < j: each distinct variant once), built in one reused buffer.
        probe(word);
        let chars: Vec<char> = word.chars().collect();
        let mut buf = String::with_capacity(word.len());
        for i in 0..chars.len() {
            buf.clear();
            buf.extend(chars[..i].iter().chain(&chars[i + 1..]));
            probe(&buf);
            if max == 2 {
                for j in i + 1..chars.len() {
                    buf.clear();
                    buf.extend(
                        chars[..i]
                            .iter()
                            .chain(&chars[i + 1..j])
                            .chain(&chars[j + 1..]),
                    );
                    probe(&buf);
                }
            }
        }
        best.map(|(_, id)| {
            let (w, p) = &self.words[id as usize];
            (&**w, p.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrects_within_distance_by_length() {
        let s = Speller::new(
            [
                "bearing",
                "cavitation",
                "hydraulic",
                "gearbox",
                "motor",
                "pressure",
            ]
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i)),
        );
        assert_eq!(s.correct("baering"), Some(("bearing", 0)));
        assert_eq!(s.correct("cavitaton"), Some(("cavitation", 1)));
        assert_eq!(s.correct("hydrualic"), Some(("hydraulic", 2)));
        // Two edits in a long word (here two letters too many).
        assert_eq!(s.correct("hydraaulicc"), Some(("hydraulic", 2)));
        assert_eq!(s.correct("presure"), Some(("pressure", 5)));
        // Two edits in a 7-letter word: too far.
        assert_eq!(s.correct("gxarbxx"), None);
        // Short words are never corrected.
        assert_eq!(s.correct("motr"), None);
        // A dictionary word is not "corrected" to itself.
        assert_eq!(s.correct("bearing"), None);
        // Nor is a word with another first letter: "rotor" is not a typo of "motor".
        assert_eq!(s.correct("rotor"), None);
        assert_eq!(s.correct("gotor"), None);
    }
}
