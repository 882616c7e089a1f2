//! Text normalisation shared by documents, lexicon keys and questions: lower-casing, folding of
//! umlauts and accents to ASCII (`ö`→`oe`, `ß`→`ss`, `é`→`e`, `ñ`→`n`), apostrophes dropped inside
//! words (`won't`→`wont`), and splitting into word tokens that remember their clause.
//!
//! Folding happens before stemming on both sides, so a technician who types `Oel` or `Öl` meets
//! the same glossary entry, and `a` `vibração` meets `vibracao`.

/// One word of a text, folded to lower-case ASCII where it is Latin script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The word, lower-cased and folded (`Öl` → `oel`).
    pub text: String,
    /// Clause number: punctuation (`, . ; : ! ?`, brackets, line breaks) starts a new clause.
    pub clause: u16,
}

/// Appends the folded form of one character.
fn fold_char(c: char, out: &mut String) {
    match c {
        'ä' | 'æ' => out.push_str("ae"),
        'ö' | 'œ' => out.push_str("oe"),
        'ü' => out.push_str("ue"),
        'ß' => out.push_str("ss"),
        'à' | 'á' | 'â' | 'ã' | 'å' | 'ą' | 'ă' => out.push('a'),
        'ç' | 'ć' | 'č' => out.push('c'),
        'è' | 'é' | 'ê' | 'ë' | 'ę' | 'ě' => out.push('e'),
        'ì' | 'í' | 'î' | 'ï' | 'ı' => out.push('i'),
        'ğ' => out.push('g'),
        // Lower-case 'İ' is 'i' plus a combining dot above: the dot goes.
        '\u{307}' => {}
        'ñ' | 'ń' | 'ň' => out.push('n'),
        'ò' | 'ó' | 'ô' | 'õ' | 'ø' => out.push('o'),
        'ù' | 'ú' | 'û' | 'ů' => out.push('u'),
        'ý' | 'ÿ' => out.push('y'),
        'ł' => out.push('l'),
        'ś' | 'š' | 'ş' | 'ș' => out.push('s'),
        'ź' | 'ż' | 'ž' => out.push('z'),
        'ř' => out.push('r'),
        'ť' | 'ţ' | 'ț' => out.push('t'),
        'ď' => out.push('d'),
        _ => out.push(c),
    }
}

/// The script of a text written mostly in letters no lexicon language uses (Cyrillic, Greek,
/// Arabic, Hebrew, Devanagari, Thai, Chinese/Japanese, Korean), as a name for the answer; None
/// for Latin-script text (equipment codes and numbers in Latin letters do not change that).
pub fn foreign_script(text: &str) -> Option<&'static str> {
    let (mut latin, mut other) = (0usize, [0usize; 8]);
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        let slot = match c as u32 {
            0x0400..=0x052F => 0,
            0x0370..=0x03FF => 1,
            0x0600..=0x06FF | 0x0750..=0x077F => 2,
            0x0590..=0x05FF => 3,
            0x0900..=0x097F => 4,
            0x0E00..=0x0E7F => 5,
            0x3040..=0x30FF | 0x4E00..=0x9FFF => 6,
            0xAC00..=0xD7AF | 0x1100..=0x11FF => 7,
            _ => {
                latin += 1;
                continue;
            }
        };
        other[slot] += 1;
    }
    let (slot, n) = other.iter().enumerate().max_by_key(|(_, n)| **n)?;
    (*n > latin).then_some(match slot {
        0 => "Cyrillic script (Russian, Ukrainian, Bulgarian, Serbian, ...)",
        1 => "Greek",
        2 => "Arabic script (Arabic, Persian, Urdu, ...)",
        3 => "Hebrew",
        4 => "Devanagari script (Hindi, Marathi, Nepali, ...)",
        5 => "Thai",
        6 => "Chinese or Japanese",
        _ => "Korean",
    })
}

/// Lower-cases and folds a word into `out` (cleared first).
pub fn fold_into(word: &str, out: &mut String) {
    out.clear();
    if word.is_ascii() {
        out.extend(word.bytes().map(|b| b.to_ascii_lowercase() as char));
        return;
    }
    for c in word.chars().flat_map(char::to_lowercase) {
        fold_char(c, out);
    }
}

/// The folded form of a word or phrase.
pub fn fold(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    fold_into(text, &mut s);
    s
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '’' | '`' | '´')
}

fn is_clause_break(c: char) -> bool {
    matches!(
        c,
        ',' | '.' | ';' | ':' | '!' | '?' | '(' | ')' | '[' | ']' | '\n' | '¿' | '¡'
    )
}

/// Splits `text` into folded word tokens with clause numbers. Apostrophes inside a word are
/// dropped (`doesn't` → `doesnt`); every other non-alphanumeric character separates words.
/// Words longer than 40 characters are ignored (no SOP term is that long; it bounds the work).
pub fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::with_capacity(16);
    let mut clause = 0u16;
    let mut word = String::with_capacity(24);
    let mut folded = String::with_capacity(24);
    let mut flush = |word: &mut String, clause: u16, out: &mut Vec<Token>| {
        if !word.is_empty() {
            if word.chars().count() <= 40 {
                fold_into(word, &mut folded);
                out.push(Token {
                    text: folded.clone(),
                    clause,
                });
            }
            word.clear();
        }
    };
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() {
            word.push(c);
        } else if is_apostrophe(c)
            && !word.is_empty()
            && chars.peek().is_some_and(|n| n.is_alphabetic())
        {
            // inside a word: drop it
        } else {
            flush(&mut word, clause, &mut out);
            if is_clause_break(c) {
                clause = clause.saturating_add(1);
            }
        }
    }
    flush(&mut word, clause, &mut out);
    out
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), on characters.
/// Gives up early and returns `max + 1` once the distance must exceed `max`.
pub fn edit_distance(a: &str, b: &str, max: usize) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return max + 1;
    }
    let w = b.len() + 1;
    let mut prev2 = vec![0usize; w];
    let mut prev: Vec<usize> = (0..w).collect();
    let mut cur = vec![0usize; w];
    for i in 1..=a.len() {
        cur[0] = i;
        let mut row_min = cur[0];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(prev2[j - 2] + 1);
            }
            cur[j] = v;
            row_min = row_min.min(v);
        }
        if row_min > max {
            return max + 1;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()].min(max + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_umlauts_and_accents() {
        assert_eq!(fold("Öltemperatur"), "oeltemperatur");
        assert_eq!(fold("Oeltemperatur"), "oeltemperatur");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("CALEFACCIÓN"), "calefaccion");
        assert_eq!(fold("año"), "ano");
        assert_eq!(fold("vibração"), "vibracao");
    }

    #[test]
    fn tokens_keep_clauses_and_drop_apostrophes() {
        let t = tokens("Motor doesn't start, but the fan runs fine. OK?");
        let words: Vec<(&str, u16)> = t.iter().map(|t| (t.text.as_str(), t.clause)).collect();
        assert_eq!(
            words,
            vec![
                ("motor", 0),
                ("doesnt", 0),
                ("start", 0),
                ("but", 1),
                ("the", 1),
                ("fan", 1),
                ("runs", 1),
                ("fine", 1),
                ("ok", 2)
            ]
        );
        assert_eq!(tokens("e-stop 5.5bar")[0].text, "e");
    }

    #[test]
    fn edit_distance_counts_transpositions() {
        assert_eq!(edit_distance("bearing", "baering", 2), 1);
        assert_eq!(edit_distance("cavitation", "cavitaton", 2), 1);
        assert_eq!(edit_distance("hydraulic", "hydralic", 2), 1);
        assert_eq!(edit_distance("conveyor", "conveyer", 2), 1);
        assert_eq!(edit_distance("gearbox", "gearbxo", 2), 1);
        assert_eq!(edit_distance("overheating", "overheeting", 2), 1);
        assert_eq!(edit_distance("motor", "rotor", 2), 1);
        assert_eq!(edit_distance("pump", "compressor", 2), 3);
    }
}
