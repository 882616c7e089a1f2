//! Question analysis: from what a technician typed to English index terms and a symptom stream.
//!
//! 1. Fold and split into words with clause numbers ([`super::text`]).
//! 2. Detect the language: function words, glossary words and typical letters of each lexicon
//!    language against English function words and words the knowledge base knows; ties go to
//!    English.
//! 3. Walk the words once: clause-break words start a new clause; out-of-scope objects are noted;
//!    a negator opens a scope over the next three content words; "works fine" words mark their
//!    clause (unless negated or after a comparison word: "hotter than normal"); the longest
//!    `[terms]` phrase of the question's language, then of English, is replaced by its English
//!    value; other words are kept when the knowledge base knows their English stem, else split
//!    as a compound (languages with `compounds = true`), else corrected within one or two edits
//!    against the language's glossary or the knowledge base's own words, else kept as unknown
//!    (they still lower the relevance, which is what makes "no SOP covers this" possible).
//! 4. Negated fault words ("no leak", "kein Leck") are dropped; in a clause that says something
//!    works, only equipment words are kept ("the motor runs fine but ..." keeps `motor`).
//! 5. A question is out of scope when it names an out-of-scope object before (or without) any
//!    plant equipment the knowledge base covers.

use rustc_hash::FxHashSet as HashSet;

use super::index::Index;
use super::lexicon::{Language, Lexicon, PhraseTable, NOT};
use super::speller::Speller;
use super::text::{fold, tokens, Token};

/// Content words a negator reaches.
const NEGATION_REACH: u8 = 3;

/// Languages that take part in detection (a lexicon with more is cut here; the embedded one has
/// 24).
pub const MAX_LANGUAGES: usize = 64;

/// What the analysis understood.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Index into the lexicon's languages (0 = English).
    pub language: usize,
    /// English index terms for retrieval (duplicates kept).
    pub terms: Vec<String>,
    /// English stems and [`NOT`] markers per clause, for symptom matching.
    pub symptoms: Vec<(u16, String)>,
    /// The out-of-scope object that makes this question out of scope (as written in the lexicon).
    pub out_of_scope: Option<String>,
    /// What was rewritten: `typed → understood` (lexicon terms, compounds), `typed ≈ understood`
    /// (typo corrections).
    pub rewrites: Vec<String>,
    /// Clause of each of `terms` (same order and length), for relevance within a clause window.
    pub term_clauses: Vec<u16>,
    /// The first phrase that asks something other than a repair (`how many`), as written in
    /// the lexicon.
    pub non_repair: Option<String>,
    /// Whether that phrase stands in the first clause (the question's lead, not an aside at the
    /// end of a report: "..., on-call not answering").
    pub non_repair_leads: bool,
    /// Whether the text opens with a question word (before any content word).
    pub question_led: bool,
    /// A machine no SOP covers, named before (or without) covered equipment.
    pub uncovered: Option<String>,
    /// Whether a fault word stands in the question, not negated and not in a "works fine"
    /// clause (`leak`, `noise`, `alarm`, `trips`, ... in any language, after translation).
    pub fault_word: bool,
    /// How many distinct terms name a symptom or defect of the knowledge base (words of the
    /// `symptoms:` and `defects:` headers that are not equipment names).
    pub symptom_terms: usize,
    /// How many distinct terms the knowledge base knows that are not equipment names.
    pub content_terms: usize,
    /// How many distinct terms name equipment the knowledge base covers (not negated).
    pub equipment_terms: usize,
}

/// Per-engine analysis state built from the lexicon and the knowledge base's vocabulary.
pub struct QueryAnalyzer {
    /// The lexicon the questions are read with (languages, glossaries, phrase tables).
    pub lexicon: Lexicon,
    /// Per language, per `[terms]` phrase: the value's symptom stream, its English retrieval
    /// terms with [`NOT`] where a negator stood (the retrieval terms are this without [`NOT`]).
    value_symptoms: Vec<Vec<Box<[Box<str>]>>>,
    /// English stems of fault words (dropped when negated).
    fault: HashSet<String>,
    /// English stems of the knowledge base's equipment names: the head word of each (the last:
    /// "pump" of "feedwater pump", "block" of "pillow block"). A modifier ("oil" of "oil
    /// cooler", "temperature" of "temperature controller") is no machine: a text that names
    /// only it ("oil at 75 degrees") still says something.
    equipment: HashSet<String>,
    /// English stems of the knowledge base's symptom and defect words that are no word of an
    /// equipment name (head or modifier): what a fault report mentions.
    symptom: HashSet<String>,
    /// The knowledge base's own words (folded) → English stem; frequent words first.
    kb_speller: Speller<String>,
    /// Per language: single-word glossary keys (folded) → phrase id.
    lang_spellers: Vec<Speller<u32>>,
    /// Per folded word, the languages (bit = index) for which it is detection evidence: a
    /// function word (stop word, negator, clause break), or a single-word glossary key (not for
    /// English, whose evidence is the knowledge base's own words).
    detect_words: rustc_hash::FxHashMap<String, u64>,
    /// Per letter, the languages that list it as typical.
    detect_letters: rustc_hash::FxHashMap<char, u64>,
    /// English stems of every language's function words (stop words, negators, fine words,
    /// clause breaks): a cache, as most words of a question are these or knowledge-base words.
    function_stems: rustc_hash::FxHashMap<String, String>,
    /// Per language, stems of the words its non-repair, question, out-of-scope and uncovered
    /// machine phrases use: a word the pack knows in that sense is never "corrected" into a
    /// glossary or knowledge-base word ("cubos" is not a typo of "cabos").
    listed: Vec<HashSet<String>>,
    /// English stems of every word of the equipment names: a modifier right before a machine
    /// word ("hydraulic press") is part of the machine's name, not something said about it.
    name_words: HashSet<String>,
}

/// Retrieval terms of English text: folded words minus stop words, negators and words with
/// digits, Snowball-stemmed. Used for documents, lexicon values and equipment names alike.
pub fn english_terms(en: &Language, text: &str) -> Vec<String> {
    tokens(text)
        .iter()
        .filter(|t| keep_word(en, t))
        .map(|t| en.stem(&t.text))
        .collect()
}

/// Like [`english_terms`], with each negator kept as [`NOT`] ("will not start" → `¬ start`).
pub fn english_symptom_terms(en: &Language, text: &str) -> Vec<String> {
    tokens(text)
        .iter()
        .filter_map(|t| {
            if en.negators.contains(&t.text) {
                Some(NOT.to_string())
            } else {
                keep_word(en, t).then(|| en.stem(&t.text))
            }
        })
        .collect()
}

fn keep_word(en: &Language, t: &Token) -> bool {
    t.text.len() >= 2
        && !t.text.bytes().any(|b| b.is_ascii_digit())
        && !en.stop.contains(&t.text)
        && !en.negators.contains(&t.text)
}

struct Item {
    stem: String,
    clause: u16,
    negated: bool,
}

impl QueryAnalyzer {
    /// Builds the analyzer; `kb_words` are the knowledge base's folded words with their English
    /// stems, most frequent first; `equipment_names` the documents' `equipment:` entries.
    pub fn new<'a>(
        lexicon: Lexicon,
        kb_words: Vec<(String, String)>,
        equipment_names: impl IntoIterator<Item = &'a str>,
        symptom_texts: impl IntoIterator<Item = &'a str>,
    ) -> QueryAnalyzer {
        let en = lexicon.en();
        let value_symptoms = lexicon
            .languages
            .iter()
            .map(|l| {
                l.terms
                    .list
                    .iter()
                    .map(|p| {
                        english_symptom_terms(en, &p.value)
                            .into_iter()
                            .map(String::into_boxed_str)
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let fault = lexicon
            .languages
            .iter()
            .flat_map(|l| l.fault.iter())
            .map(|w| en.stem(w))
            .collect();
        let names: Vec<Vec<String>> = equipment_names
            .into_iter()
            .map(|e| english_terms(en, e))
            .collect();
        let equipment: HashSet<String> = names.iter().filter_map(|t| t.last().cloned()).collect();
        let name_words: HashSet<String> = names.into_iter().flatten().collect();
        let symptom = symptom_texts
            .into_iter()
            .flat_map(|e| english_terms(en, e))
            .filter(|s| !name_words.contains(s))
            .collect();
        let lang_spellers = lexicon
            .languages
            .iter()
            .map(|l| {
                let mut keys: Vec<(String, u32)> =
                    l.surface.iter().map(|(k, &v)| (k.clone(), v)).collect();
                keys.sort();
                Speller::new(keys)
            })
            .collect();
        let function_stems = lexicon
            .languages
            .iter()
            .flat_map(|l| [&l.stop, &l.negators, &l.fine, &l.comparison, &l.breaks])
            .flatten()
            .map(|w| (w.clone(), en.stem(w)))
            .collect();
        let kb_speller = Speller::new(kb_words);
        let listed = lexicon
            .languages
            .iter()
            .map(|l| {
                [&l.non_repair, &l.question, &l.out_of_scope, &l.uncovered]
                    .into_iter()
                    .flat_map(|t| t.list.iter())
                    .flat_map(|p| p.stems.iter().map(|s| s.to_string()))
                    .collect()
            })
            .collect();
        let mut detect_words: rustc_hash::FxHashMap<String, u64> = Default::default();
        let mut detect_letters: rustc_hash::FxHashMap<char, u64> = Default::default();
        for (li, l) in lexicon.languages.iter().enumerate().take(MAX_LANGUAGES) {
            let bit = 1u64 << li;
            let surface = (li > 0).then_some(l.surface.keys()).into_iter().flatten();
            // One-word question words of other languages ("quantos", "combien") too, unless
            // English uses the word ("was", "come").
            let questions: Vec<String> = l
                .question
                .list
                .iter()
                .filter(|p| li > 0 && p.stems.len() == 1)
                .map(|p| fold(p.key.trim()))
                .filter(|w| !en.stop.contains(w) && kb_speller.exact(w).is_none())
                .collect();
            for w in [&l.stop, &l.negators, &l.breaks]
                .into_iter()
                .flatten()
                .chain(surface)
                .chain(&questions)
            {
                *detect_words.entry(w.clone()).or_default() |= bit;
            }
            for &c in &l.letters {
                *detect_letters.entry(c).or_default() |= bit;
            }
        }
        QueryAnalyzer {
            detect_words,
            detect_letters,
            function_stems,
            listed,
            name_words,
            kb_speller,
            lang_spellers,
            value_symptoms,
            fault,
            equipment,
            symptom,
            lexicon,
        }
    }

    /// Whether an English stem names equipment the knowledge base covers.
    pub fn is_equipment(&self, stem: &str) -> bool {
        self.equipment.contains(stem)
    }

    /// The language of a question: per language, one point per function word, negator,
    /// clause-break word or glossary word (for English: word the knowledge base or the English
    /// lexicon knows), plus up to 1.5 for typical letters; ties go to English.
    fn detect(&self, raw: &str, toks: &[Token], stems_en: &[String], index: &Index) -> usize {
        let en = self.lexicon.en();
        let n = self.lexicon.languages.len();
        // One lookup per word and per letter for all languages at once (a question is scored
        // against two dozen languages on every request).
        let mut scores = [0.0f32; MAX_LANGUAGES];
        for (t, s) in toks.iter().zip(stems_en) {
            let mask = self.detect_words.get(t.text.as_str()).copied().unwrap_or(0);
            // English: a function word, or a word the knowledge base or its lexicon knows.
            if mask & 1 == 0 && (index.contains(s) || en.terms.has_word(s)) {
                scores[0] += 1.0;
            }
            for (li, score) in scores.iter_mut().enumerate().take(n) {
                if mask >> li & 1 == 1 {
                    *score += 1.0;
                }
            }
        }
        let mut letters = [0u8; MAX_LANGUAGES];
        if !raw.is_ascii() {
            for c in raw.chars().flat_map(char::to_lowercase) {
                if let Some(&mask) = self.detect_letters.get(&c) {
                    for (li, count) in letters.iter_mut().enumerate().take(n) {
                        if mask >> li & 1 == 1 {
                            *count = count.saturating_add(1);
                        }
                    }
                }
            }
        }
        let mut best = (0usize, 0.0f32);
        for li in 0..n {
            let score = scores[li] + f32::from(letters[li].min(2)) * 0.75;
            if score > best.1 {
                best = (li, score);
            }
        }
        best.0
    }

    /// Splits a folded compound into glossary keys ("hydraulikaggregat" → hydraulik + aggregat),
    /// allowing German linking letters between parts.
    fn split_compound(&self, l: &Language, word: &str, depth: u8, out: &mut Vec<u32>) -> bool {
        if !word.is_ascii() || word.len() < 6 || depth > 3 {
            return false;
        }
        for i in (3..=word.len() - 3).rev() {
            let Some(&first) = l.surface.get(&word[..i]) else {
                continue;
            };
            let rest = &word[i..];
            for link in ["", "s", "es", "n", "en", "e"] {
                let Some(r) = rest.strip_prefix(link) else {
                    continue;
                };
                if r.len() < 3 {
                    continue;
                }
                let whole = l.surface.get(r).copied().or_else(|| {
                    l.terms
                        .longest_at(&[l.stem(r).as_str()])
                        .filter(|(_, n)| *n == 1)
                        .map(|(id, _)| id)
                });
                if let Some(id) = whole {
                    out.push(first);
                    out.push(id);
                    return true;
                }
                let mark = out.len();
                out.push(first);
                if self.split_compound(l, r, depth + 1, out) {
                    return true;
                }
                out.truncate(mark);
            }
        }
        false
    }

    /// Analyses a question.
    pub fn analyze(&self, text: &str, index: &Index) -> Analysis {
        let toks = tokens(text);
        let en = self.lexicon.en();
        // The knowledge base's words have their stems already: stemming is the costliest step.
        let stems_en: Vec<String> = toks
            .iter()
            .map(|t| {
                let w = t.text.as_str();
                match self
                    .function_stems
                    .get(w)
                    .or_else(|| self.kb_speller.exact(w))
                {
                    Some(stem) => stem.clone(),
                    None => en.stem(w),
                }
            })
            .collect();
        let lang = self.detect(text, &toks, &stems_en, index);
        let l = &self.lexicon.languages[lang];
        let stems_l: Vec<String> = if lang == 0 {
            Vec::new()
        } else {
            toks.iter().map(|t| l.stem(&t.text)).collect()
        };
        let stems_l: &[String] = if lang == 0 { &stems_en } else { &stems_l };
        let all_l: Vec<&str> = stems_l.iter().map(String::as_str).collect();
        let all_en: Vec<&str> = stems_en.iter().map(String::as_str).collect();
        // English terms count in every language; for an English question `l` is English already,
        // so the second lookup is skipped.
        let other_en = (lang != 0).then_some(en);
        let mut a = Analysis {
            language: lang,
            ..Analysis::default()
        };
        let mut items: Vec<Item> = Vec::with_capacity(toks.len() + 8);
        let mut sym: Vec<(u16, String, bool)> = Vec::with_capacity(toks.len() + 8);
        let mut fine_clauses: Vec<u16> = Vec::new();
        let (mut neg_left, mut neg_clause) = (0u8, 0u16);
        let mut shift = 0u16;
        let mut oos_at: Option<usize> = None;
        let mut uncovered_at: Option<usize> = None;
        // A setting ("at home") outside the plant: out of scope wherever it stands.
        let mut setting = false;
        let mut i = 0;
        // (language index, phrase id) emitted as English terms.
        let emit = |li: usize,
                    id: u32,
                    clause: u16,
                    negated: bool,
                    items: &mut Vec<Item>,
                    sym: &mut Vec<(u16, String, bool)>| {
            for s in self.value_symptoms[li][id as usize].iter() {
                if &**s != NOT {
                    items.push(Item {
                        stem: s.to_string(),
                        clause,
                        negated,
                    });
                }
                sym.push((clause, s.to_string(), negated));
            }
        };
        while i < toks.len() {
            let w = toks[i].text.as_str();
            let clause = toks[i].clause + shift;
            if clause != neg_clause {
                neg_left = 0;
            }
            if l.breaks.contains(w) || other_en.is_some_and(|e| e.breaks.contains(w)) {
                shift += 1;
                neg_left = 0;
                i += 1;
                continue;
            }
            let end = (i + super::lexicon::MAX_PHRASE).min(toks.len());
            let (sl, se) = (&all_l[i..end], &all_en[i..end]);
            // The longest phrase of one of a language's tables at this word: the question's
            // language first, then English.
            let phrase_at = |table: fn(&Language) -> &PhraseTable| {
                let t = table(l);
                t.longest_at(sl)
                    .map(|(id, n)| (&t.list[id as usize], n))
                    .or_else(|| {
                        other_en.and_then(|en| {
                            let t = table(en);
                            t.longest_at(se).map(|(id, n)| (&t.list[id as usize], n))
                        })
                    })
            };
            let clause_start = i == 0 || toks[i].clause != toks[i - 1].clause;
            if clause_start && items.is_empty() && !a.question_led {
                a.question_led = phrase_at(|x| &x.question).is_some();
            }
            if a.non_repair.is_none() {
                if let Some((p, _)) = phrase_at(|x| &x.non_repair) {
                    a.non_repair = Some(p.key.clone());
                    a.non_repair_leads = clause == toks[0].clause;
                }
            }
            // A machine name can share its stem with what the machine works on ("gránulos" and
            // "granuladora", "tapones" and "taponadora"): a typed word three or more letters
            // shorter than the name's word, and not its beginning ("cook" of "cooking"), is
            // that other word.
            // (Only on a match, which is rare: the key's words are tokenised here.)
            let uncovered = phrase_at(|x| &x.uncovered).filter(|(phrase, n)| {
                let key = tokens(&phrase.key);
                key.len() != *n
                    || key.iter().zip(&toks[i..i + n]).all(|(k, t)| {
                        t.text.len() + 2 >= k.text.len() || k.text.starts_with(&t.text)
                    })
            });
            if let Some((phrase, n)) = uncovered {
                if uncovered_at.is_none() {
                    a.uncovered = Some(phrase.key.clone());
                    uncovered_at = Some(items.len());
                }
                i += n;
                continue;
            }
            let oos = phrase_at(|x| &x.out_of_scope);
            if let Some((phrase, n)) = oos {
                if phrase.value == super::lexicon::SETTING && !setting {
                    setting = true;
                    a.out_of_scope = Some(phrase.key.clone());
                } else if a.out_of_scope.is_none() {
                    let key = &phrase.key;
                    a.out_of_scope = Some(key.clone());
                    // A word of an equipment name right before the object modifies it
                    // ("electric car charger"): it does not make the question about plant
                    // equipment.
                    let modified = i > 0 && self.name_words.contains(&stems_en[i - 1]);
                    oos_at = Some(items.len() - usize::from(modified && !items.is_empty()));
                }
                i += n;
                continue;
            }
            // A one-word key of another language matched by a much shorter word with the same
            // stem is another word ("iş", work, is not "ısındı", overheated). English keeps it:
            // its keys are often -ing forms ("slams", "slamming").
            let fits = |li: usize, id: u32, n: usize| {
                let lang = &self.lexicon.languages[li];
                n > 1
                    || li == 0
                    || w.len() + 2 >= usize::from(lang.terms.list[id as usize].first_len)
                    // A key of its own whose entry a longer key with its stem took over ("yağ"
                    // beside "yağlar").
                    || lang.surface.contains_key(w)
            };
            let phrase = if lang != 0 {
                l.terms
                    .longest_at(sl)
                    .map(|(id, n)| (lang, id, n))
                    .filter(|&(li, id, n)| fits(li, id, n))
            } else {
                None
            }
            .or_else(|| {
                en.terms
                    .longest_at(se)
                    .map(|(id, n)| (0, id, n))
                    .filter(|&(li, id, n)| fits(li, id, n))
            });
            // A lexicon phrase that starts with a negation or a "fine" word ("no muscle", "not
            // fully formed", "never stops running") is read as the phrase, not as a negation.
            let phrase_here = phrase.is_some_and(|(_, _, n)| n >= 2);
            if !phrase_here
                && (l.negators.contains(w) || other_en.is_some_and(|e| e.negators.contains(w)))
            {
                neg_left = NEGATION_REACH;
                neg_clause = clause;
                sym.push((clause, NOT.to_string(), false));
                i += 1;
                continue;
            }
            // The text's first word is an opener ("okay so the pillow block...", "good morning
            // Laura"), not a statement that something works: it is read as any other word.
            if !phrase_here
                && i > 0
                && (l.fine.contains(w) || other_en.is_some_and(|e| e.fine.contains(w)))
            {
                let compared = {
                    let p = toks[i - 1].text.as_str();
                    l.comparison.contains(p) || other_en.is_some_and(|e| e.comparison.contains(p))
                };
                if neg_left == 0 && !compared && !fine_clauses.contains(&clause) {
                    fine_clauses.push(clause);
                }
                i += 1;
                continue;
            }
            let negated = neg_left > 0;
            if let Some((li, id, n)) = phrase {
                emit(li, id, clause, negated, &mut items, &mut sym);
                let key = &self.lexicon.languages[li].terms.list[id as usize];
                let typed: Vec<&str> = toks[i..i + n].iter().map(|t| t.text.as_str()).collect();
                a.rewrites
                    .push(format!("{} → {}", typed.join(" "), key.value));
                neg_left = neg_left.saturating_sub(1);
                i += n;
                continue;
            }
            if w.len() < 2
                || w.bytes().any(|b| b.is_ascii_digit())
                || l.stop.contains(w)
                || other_en.is_some_and(|e| e.stop.contains(w))
            {
                i += 1;
                continue;
            }
            neg_left = neg_left.saturating_sub(1);
            i += 1;
            let s_en = &stems_en[i - 1];
            if index.contains(s_en) {
                items.push(Item {
                    stem: s_en.clone(),
                    clause,
                    negated,
                });
                sym.push((clause, s_en.clone(), negated));
                continue;
            }
            let mut parts = Vec::new();
            if lang != 0 && l.compounds && self.split_compound(l, w, 0, &mut parts) {
                let keys: Vec<&str> = parts
                    .iter()
                    .map(|&id| l.terms.list[id as usize].key.as_str())
                    .collect();
                a.rewrites.push(format!("{w} → {}", keys.join(" + ")));
                for id in parts {
                    emit(lang, id, clause, negated, &mut items, &mut sym);
                }
                continue;
            }
            // Spelling correction: never for a word the pack's own phrase lists use ("cubos"
            // is not a typo of "cabos"); in a text of another language only against its
            // glossary, as a word neither its pack nor the knowledge base knows is no English
            // typo ("acuto" is not "auto", "presos" not "press").
            if !self.listed[lang].contains(sl[0]) {
                if lang != 0 {
                    if let Some((key, id)) = self.lang_spellers[lang].correct(w) {
                        a.rewrites.push(format!("{w} ≈ {key}"));
                        emit(lang, id, clause, negated, &mut items, &mut sym);
                        continue;
                    }
                } else if let Some((word, stem)) = self.kb_speller.correct(w) {
                    a.rewrites.push(format!("{w} ≈ {word}"));
                    items.push(Item {
                        stem: stem.clone(),
                        clause,
                        negated,
                    });
                    sym.push((clause, stem, negated));
                    continue;
                } else if let Some((key, id)) = self.lang_spellers[0].correct(w) {
                    a.rewrites.push(format!("{w} ≈ {key}"));
                    emit(0, id, clause, negated, &mut items, &mut sym);
                    continue;
                }
            }
            // Unknown: kept, so it counts against the relevance.
            items.push(Item {
                stem: s_en.clone(),
                clause,
                negated,
            });
        }
        let keep = |stem: &str, clause: u16, negated: bool| {
            !(negated && self.fault.contains(stem))
                && (!fine_clauses.contains(&clause) || self.equipment.contains(stem))
        };
        let first_equipment = items.iter().position(|it| {
            !it.negated && self.equipment.contains(&it.stem) && !fine_clauses.contains(&it.clause)
        });
        if let Some(at) = oos_at.filter(|_| !setting) {
            if first_equipment.is_some_and(|e| e < at) {
                a.out_of_scope = None;
            }
        }
        // Covered equipment named first: the uncovered machine is context ("the compressor by
        // the generator").
        if let Some(at) = uncovered_at {
            let first_any = items
                .iter()
                .position(|it| !it.negated && self.equipment.contains(&it.stem));
            if first_any.is_some_and(|e| e < at) {
                a.uncovered = None;
            }
        }
        let mut symptoms_seen: Vec<&str> = Vec::new();
        let mut content_seen: Vec<&str> = Vec::new();
        let mut equipment_seen: Vec<&str> = Vec::new();
        // Counted over every clause: a "works fine" word somewhere in a long message ("as on a
        // normal day") does not make the rest of it less of a report.
        for (k, it) in items.iter().enumerate() {
            if it.negated && self.fault.contains(&it.stem) {
                continue;
            }
            let names_machine = self.name_words.contains(&it.stem)
                && items
                    .get(k + 1)
                    .is_some_and(|next| self.equipment.contains(&next.stem));
            if !self.equipment.contains(&it.stem)
                && !names_machine
                && index.contains(&it.stem)
                && !content_seen.contains(&it.stem.as_str())
            {
                content_seen.push(&it.stem);
            }
            if it.negated {
                continue;
            }
            if self.fault.contains(&it.stem) {
                a.fault_word = true;
            }
            if self.symptom.contains(&it.stem) && !symptoms_seen.contains(&it.stem.as_str()) {
                symptoms_seen.push(&it.stem);
            }
            if self.equipment.contains(&it.stem) && !equipment_seen.contains(&it.stem.as_str()) {
                equipment_seen.push(&it.stem);
            }
        }
        a.symptom_terms = symptoms_seen.len();
        a.content_terms = content_seen.len();
        a.equipment_terms = equipment_seen.len();
        (a.terms, a.term_clauses) = items
            .into_iter()
            .filter(|it| keep(&it.stem, it.clause, it.negated))
            .map(|it| (it.stem, it.clause))
            .unzip();
        a.symptoms = sym
            .into_iter()
            .filter(|(c, s, neg)| {
                !(fine_clauses.contains(c) || *neg && self.fault.contains(s.as_str()))
            })
            .map(|(c, s, _)| (c, s))
            .collect();
        a
    }
}

/// Folded words of a text with their English stems, for the knowledge base's speller.
pub fn kb_words<'a>(
    en: &Language,
    texts: impl IntoIterator<Item = &'a str>,
) -> Vec<(String, String)> {
    let mut count: rustc_hash::FxHashMap<String, usize> = Default::default();
    for t in texts {
        for tok in tokens(t) {
            if tok.text.len() >= super::speller::MIN_LEN - 1
                && tok.text.bytes().all(|b| b.is_ascii_lowercase())
                && !en.stop.contains(&tok.text)
            {
                *count.entry(tok.text).or_default() += 1;
            }
        }
    }
    let mut words: Vec<(String, usize)> = count.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    words
        .into_iter()
        .map(|(w, _)| {
            let s = en.stem(&w);
            (w, s)
        })
        .collect()
}

/// The folded form of a phrase, for comparing asset classes with equipment names.
pub fn normalise(text: &str) -> String {
    fold(text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::kb::parse_document;

    const EN: &str = r#"
language = "en"
stemmer = "english"
stop_words = ["the", "a", "is", "on", "at", "and", "it", "of", "in", "than"]
negators = ["no", "not", "wont", "doesnt"]
fine_words = ["fine", "ok", "normal"]
comparison_words = ["than"]
clause_breaks = ["but"]
fault_words = ["leak", "leaking", "noise", "noisy"]
out_of_scope = ["water cooler", "aircon"]
out_of_scope_settings = ["at home"]
[terms]
"cav" = "cavitation"
"hitting it with a hammer" = "knocking"
"no muscle" = "low tonnage"
"#;
    const DE: &str = r#"
language = "de"
stemmer = "german"
letters = "äöüß"
compounds = true
stop_words = ["der", "die", "das", "am", "ist", "zu", "und"]
negators = ["kein", "keine", "nicht"]
fine_words = ["normal"]
clause_breaks = ["aber"]
out_of_scope_settings = ["zu hause"]
[terms]
"öl" = "oil"
"temperatur" = "temperature"
"hydraulik" = "hydraulic"
"aggregat" = "power unit"
"hoch" = "high"
"leck" = "leak"
"pumpe" = "pump"
"klopft" = "knocking"
"#;

    fn setup() -> (QueryAnalyzer, Index) {
        let docs = vec![
            parse_document("a", "---\nid: A\ntitle: Hydraulic oil temperature high\nequipment: hydraulic power unit, pump\nsymptoms: high oil temperature, leak\n---\n## Steps\n1. Check the oil cooler.\n").unwrap(),
            parse_document("b", "---\nid: B\ntitle: Pump cavitation and knocking\nequipment: pump, motor\nsymptoms: cavitation, knocking, motor will not start\n---\n## Steps\n1. Check the suction strainer.\n").unwrap(),
        ];
        let lex = Lexicon::parse([("en.toml", EN), ("de.toml", DE)]).unwrap();
        let en = lex.en();
        let index = Index::build(&docs, |t| english_terms(en, t));
        let words = kb_words(en, docs.iter().map(|d| d.title.as_str()));
        let qa = QueryAnalyzer::new(
            lex,
            words,
            docs.iter()
                .flat_map(|d| d.equipment.iter().map(String::as_str))
                .collect::<Vec<_>>(),
            docs.iter()
                .flat_map(|d| d.symptoms.iter().map(String::as_str))
                .collect::<Vec<_>>(),
        );
        (qa, index)
    }

    #[test]
    fn lexicon_phrases_and_shorthand_become_english_terms() {
        let (qa, idx) = setup();
        let a = qa.analyze("pump cav, sounds like hitting it with a hammer", &idx);
        assert_eq!(a.language, 0);
        assert_eq!(a.terms, vec!["pump", "cavit", "sound", "like", "knock"]);
        assert_eq!(a.rewrites.len(), 2, "{:?}", a.rewrites);
    }

    #[test]
    fn negated_fault_words_and_fine_clauses_are_dropped() {
        let (qa, idx) = setup();
        let a = qa.analyze("no leak at the pump but it is knocking", &idx);
        assert!(!a.terms.contains(&"leak".to_string()), "{:?}", a.terms);
        assert!(a.terms.contains(&"knock".to_string()));
        // The motor clause says it works: only its equipment word stays.
        let a = qa.analyze("motor runs fine, the pump is noisy", &idx);
        assert!(a.terms.contains(&"motor".to_string()), "{:?}", a.terms);
        assert!(!a.terms.contains(&"run".to_string()), "{:?}", a.terms);
        assert!(!a.symptoms.iter().any(|(c, _)| *c == 0), "{:?}", a.symptoms);
        // A negated function word is the symptom itself, and keeps its marker.
        let a = qa.analyze("motor wont start", &idx);
        let s: Vec<&str> = a.symptoms.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(s, vec!["motor", NOT, "start"]);
        // A comparison is not a "works fine" clause.
        let a = qa.analyze("pump hotter than normal", &idx);
        assert!(a.terms.contains(&"hotter".to_string()), "{:?}", a.terms);
    }

    #[test]
    fn a_lexicon_phrase_starting_with_a_negation_is_read_as_the_phrase() {
        let (qa, idx) = setup();
        let a = qa.analyze("press has no muscle", &idx);
        assert!(
            a.rewrites.iter().any(|r| r.starts_with("no muscle →")),
            "{:?}",
            a.rewrites
        );
        assert!(
            a.terms.iter().any(|t| t.starts_with("tonnag")),
            "{:?}",
            a.terms
        );
        // Not a phrase: the negation still drops the fault word after it.
        let a = qa.analyze("press has no leak", &idx);
        assert!(!a.terms.contains(&"leak".to_string()), "{:?}", a.terms);
    }

    #[test]
    fn german_is_detected_folded_and_compounds_split() {
        let (qa, idx) = setup();
        let a = qa.analyze("Öltemperatur am Hydraulikaggregat zu hoch", &idx);
        let b = qa.analyze("Oeltemperatur am Hydraulikaggregat zu hoch", &idx);
        assert_eq!(a.language, 1);
        assert_eq!(b.language, 1, "folded spelling is still German");
        assert_eq!(a.terms, b.terms);
        assert_eq!(
            a.terms,
            vec!["oil", "temperatur", "hydraul", "power", "unit", "high"]
        );
        let a = qa.analyze("kein Leck, aber die Pumpe klopft", &idx);
        assert_eq!(a.terms, vec!["pump", "knock"]);
    }

    #[test]
    fn typos_are_corrected_against_the_knowledge_base() {
        let (qa, idx) = setup();
        let a = qa.analyze("hydralic temprature", &idx);
        assert_eq!(a.terms, vec!["hydraul", "temperatur"], "{:?}", a.rewrites);
        // German glossary words too.
        let a = qa.analyze("die Pumppe klopft", &idx);
        assert_eq!(a.terms, vec!["pump", "knock"], "{:?}", a.rewrites);
    }

    /// The out-of-scope object or setting the analyser found in `text`, if any.
    fn out_of_scope(text: &str) -> Option<String> {
        let (qa, idx) = setup();
        qa.analyze(text, &idx).out_of_scope
    }

    #[test]
    fn out_of_scope_object_named_first_is_refused() {
        assert_eq!(
            out_of_scope("the water cooler is leaking").as_deref(),
            Some("water cooler")
        );
        assert_eq!(out_of_scope("aircon noisy").as_deref(), Some("aircon"));
        assert_eq!(out_of_scope("pump knocking, the aircon is off too"), None);
    }

    #[test]
    fn out_of_scope_setting_counts_wherever_it_stands() {
        // A plant word first does not bring a question about home back into the plant.
        assert_eq!(
            out_of_scope("my gas boiler at home keeps locking out").as_deref(),
            Some("at home")
        );
        assert_eq!(
            out_of_scope("Pumpe vom Gartenteich zu Hause brummt nur").as_deref(),
            Some("zu hause")
        );
        assert_eq!(
            out_of_scope("boiler 1 locks out after the burner starts"),
            None
        );
    }
}
