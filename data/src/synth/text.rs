//! Report noise: the slips real radiology-style reports carry, applied without ever touching
//! the words that carry the information (zone words and count words).
//!
//! [`roughen`] applies, independently per report:
//! * casing (45%): all lower case, Title Case, random words capitalised, or the first words in
//!   CAPITALS; zone words are only ever lower case or Capitalised, never all capitals;
//! * a typo (15%, a second one 4%) in one word of five letters or more that is not protected:
//!   two letters swapped, one dropped, one doubled, or a vowel replaced;
//! * punctuation (each about 5–10%): a doubled final period (`lung..`), a missing final period,
//!   a space before a comma, a doubled space.

use super::random::{below, chance, pick, uni};
use rand::Rng;

/// Words naming zones: never misspelt, abbreviated or written in capitals.
pub(crate) const ZONE_WORDS: [&str; 6] = ["left", "right", "upper", "lower", "middle", "center"];

/// Number words, index = value.
pub(crate) const COUNT_WORDS: [&str; 7] = ["zero", "one", "two", "three", "four", "five", "six"];

/// Words that must survive intact (besides zone and count words).
const PROTECTED: [&str; 3] = ["no", "none", "lung"];

/// The word for `n` (digits beyond six).
pub(crate) fn count_word(n: usize) -> String {
    COUNT_WORDS
        .get(n)
        .map(|w| w.to_string())
        .unwrap_or_else(|| n.to_string())
}

/// The count a report states for `n` targets: `n`, or with probability `rate` a neighbouring
/// wrong count (at least 1), as real reports sometimes contradict their own zone list.
pub(crate) fn stated_count(rng: &mut impl Rng, n: usize, rate: f32) -> usize {
    if n == 0 || !chance(rng, rate) {
        return n;
    }
    if n == 1 || chance(rng, 0.5) {
        n + 1
    } else {
        n - 1
    }
}

/// `singular` or `plural` for `n` things, with probability `slip` of the wrong number
/// ("one infected areas").
pub(crate) fn noun<'a>(
    rng: &mut impl Rng,
    n: usize,
    singular: &'a str,
    plural: &'a str,
    slip: f32,
) -> &'a str {
    let one = n == 1;
    let one = if chance(rng, slip) { !one } else { one };
    if one {
        singular
    } else {
        plural
    }
}

/// Joins phrases as a list: "a and b", "a, b and c", "a, b, c", "a & b".
pub(crate) fn join_list(rng: &mut impl Rng, items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => {
            let last_sep = *pick(rng, &[" and ", " and ", " and ", ", ", " & "]);
            let head = items[..n - 1].join(", ");
            format!("{head}{last_sep}{}", items[n - 1])
        }
    }
}

fn is_protected(word: &str) -> bool {
    let lw = word.to_ascii_lowercase();
    ZONE_WORDS.contains(&lw.as_str())
        || COUNT_WORDS.contains(&lw.as_str())
        || PROTECTED.contains(&lw.as_str())
}

fn is_zone_word(word: &str) -> bool {
    ZONE_WORDS.contains(&word.to_ascii_lowercase().as_str())
}

fn capitalise(word: &str) -> String {
    let mut cs = word.chars();
    match cs.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + cs.as_str(),
        None => String::new(),
    }
}

/// A piece of text: a run of ASCII letters (a word) or anything else.
struct Piece {
    text: String,
    word: bool,
}

fn split_words(s: &str) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for ch in s.chars() {
        let word = ch.is_ascii_alphabetic();
        match out.last_mut() {
            Some(p) if p.word == word => p.text.push(ch),
            _ => out.push(Piece {
                text: ch.to_string(),
                word,
            }),
        }
    }
    out
}

fn apply_casing(rng: &mut impl Rng, pieces: &mut [Piece]) {
    let mode = super::random::weighted(rng, &[0.55, 0.17, 0.1, 0.12, 0.06]);
    let mut first = true;
    let mut caps_left = 1 + below(rng, 2);
    for p in pieces.iter_mut().filter(|p| p.word) {
        let zone = is_zone_word(&p.text);
        match mode {
            1 => p.text = p.text.to_ascii_lowercase(),
            2 => p.text = capitalise(&p.text.to_ascii_lowercase()),
            3 if !first && chance(rng, 0.25) => {
                p.text = if p.text.starts_with(|c: char| c.is_ascii_uppercase()) {
                    p.text.to_ascii_lowercase()
                } else {
                    capitalise(&p.text)
                }
            }
            4 if caps_left > 0 && !zone => {
                p.text = p.text.to_ascii_uppercase();
                caps_left -= 1;
            }
            4 => caps_left = 0,
            _ => {}
        }
        first = false;
    }
}

/// One typo in `w` (at least 5 letters).
fn typo(rng: &mut impl Rng, w: &str) -> String {
    let mut cs: Vec<char> = w.chars().collect();
    let n = cs.len();
    if n < 5 {
        return w.to_string();
    }
    let i = 1 + below(rng, n - 2); // never the first letter, never the last index
    match below(rng, 4) {
        0 => cs.swap(i, i + 1),
        1 => {
            cs.remove(i);
        }
        2 => cs.insert(i, cs[i]),
        _ => {
            let vowels = ['a', 'e', 'i', 'o', 'u'];
            if let Some(k) = (i..n).find(|&k| vowels.contains(&cs[k].to_ascii_lowercase())) {
                let lower = cs[k].to_ascii_lowercase();
                let other = vowels[(vowels.iter().position(|&v| v == lower).unwrap_or(0)
                    + 1
                    + below(rng, 4))
                    % 5];
                cs[k] = if cs[k].is_ascii_uppercase() {
                    other.to_ascii_uppercase()
                } else {
                    other
                };
            } else {
                cs.swap(i, i + 1);
            }
        }
    }
    cs.into_iter().collect()
}

fn apply_typos(rng: &mut impl Rng, pieces: &mut [Piece]) {
    let mut n = usize::from(chance(rng, 0.15));
    if n > 0 && chance(rng, 0.27) {
        n += 1;
    }
    for _ in 0..n {
        let eligible: Vec<usize> = pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| p.word && p.text.len() >= 5 && !is_protected(&p.text))
            .map(|(i, _)| i)
            .collect();
        if eligible.is_empty() {
            return;
        }
        let i = eligible[below(rng, eligible.len())];
        pieces[i].text = typo(rng, &pieces[i].text);
    }
}

/// Applies casing, typo and punctuation noise (see the module docs).
pub(crate) fn roughen(rng: &mut impl Rng, clean: &str) -> String {
    let mut pieces = split_words(clean);
    if chance(rng, 0.45) {
        apply_casing(rng, &mut pieces);
    }
    apply_typos(rng, &mut pieces);
    let mut s: String = pieces.into_iter().map(|p| p.text).collect();

    let r = uni(rng, 0.0, 1.0);
    if s.ends_with('.') {
        if r < 0.10 {
            s.push('.');
        } else if r < 0.18 {
            s.pop();
        }
    }
    if chance(rng, 0.05) {
        if let Some(i) = s.find(", ") {
            s.replace_range(i..i + 2, " , ");
        }
    }
    if chance(rng, 0.06) {
        let spaces: Vec<usize> = s.match_indices(' ').map(|(i, _)| i).collect();
        if !spaces.is_empty() {
            let i = spaces[below(rng, spaces.len())];
            s.insert(i, ' ');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::random::sample_rng;
    use crate::Modality;

    #[test]
    fn roughen_keeps_zone_and_count_words() {
        let clean = "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.";
        let mut rng = sample_rng(0, Modality::Xray, 0);
        let mut changed = 0;
        for _ in 0..500 {
            let s = roughen(&mut rng, clean);
            changed += usize::from(s != clean);
            let words: Vec<String> = s
                .split(|c: char| !c.is_ascii_alphabetic())
                .filter(|w| !w.is_empty())
                .map(|w| w.to_string())
                .collect();
            for w in ["upper", "left", "lower", "right", "two", "lung"] {
                assert!(
                    words.iter().any(|x| x.eq_ignore_ascii_case(w)),
                    "{w} lost in {s}"
                );
            }
            for w in &words {
                if is_zone_word(w) {
                    assert!(
                        w.chars().skip(1).all(|c| c.is_ascii_lowercase()),
                        "zone word in caps: {s}"
                    );
                }
            }
        }
        assert!(changed > 150 && changed < 450, "{changed} of 500 changed");
    }

    #[test]
    fn typos_change_one_word() {
        let mut rng = sample_rng(0, Modality::Ct, 0);
        for _ in 0..100 {
            let t = typo(&mut rng, "pulmonary");
            assert_ne!(t, "pulmonary");
            assert!((8..=10).contains(&t.len()));
            assert!(t.starts_with('p'));
        }
    }

    #[test]
    fn stated_counts() {
        let mut rng = sample_rng(0, Modality::Ct, 1);
        for n in 0..4 {
            assert_eq!(stated_count(&mut rng, n, 0.0), n);
            let c = stated_count(&mut rng, n, 1.0);
            assert_eq!(c == n, n == 0);
            assert!(c >= n.min(1));
        }
    }
}
