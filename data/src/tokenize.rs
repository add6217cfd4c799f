//! Report tokenisation with the `tokenizers` crate: a Hugging Face `tokenizer.json`, a BERT
//! `vocab.txt` (e.g. CXR-BERT's), or a WordPiece vocabulary learned from the training reports.
//!
//! Every report becomes exactly `max_len` ids (`[CLS] … [SEP]`, truncated, then padded) plus an
//! attention mask, so batches are dense `(B, max_len)` arrays.

use crate::{DataError, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    Model, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString,
    PreTokenizer, Tokenizer,
};

/// Special tokens, in the id order a learned vocabulary gives them.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// A report tokenizer producing fixed-length id sequences.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    pad_id: u32,
    source: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("max_len", &self.max_len)
            .finish()
    }
}

/// One tokenised report: `max_len` ids and the matching attention mask (1 = token, 0 = pad).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub attention: Vec<u32>,
    /// The text had more than `max_len` tokens: the model sees only its beginning.
    pub truncated: bool,
}

fn tok_err(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer {
        path: path.into(),
        message: e.to_string(),
    }
}

fn bert_pipeline(model: WordPiece, lowercase: bool, path: &Path) -> Result<Tokenizer> {
    let cls = model.token_to_id("[CLS]");
    let sep = model.token_to_id("[SEP]");
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_decoder(Some(WordPieceDecoder::default()));
    match (cls, sep) {
        (Some(cls), Some(sep)) => {
            tok.with_post_processor(Some(BertProcessing::new(
                ("[SEP]".into(), sep),
                ("[CLS]".into(), cls),
            )));
        }
        _ => {
            return Err(tok_err(
                path,
                "the vocabulary has no [CLS] and [SEP] tokens",
            ))
        }
    }
    Ok(tok)
}

impl TextTokenizer {
    /// Loads `tokenizer.json` (any Hugging Face tokenizer) or a BERT `vocab.txt`.
    pub fn from_file(path: &Path, max_len: usize, lowercase: bool) -> Result<Self> {
        if !path.is_file() {
            return Err(tok_err(path, "no such file"));
        }
        let is_vocab = path.extension().is_some_and(|e| e == "txt");
        let inner = if is_vocab {
            let p = path
                .to_str()
                .ok_or_else(|| tok_err(path, "path is not UTF-8"))?;
            let model = WordPiece::from_file(p)
                .unk_token("[UNK]".into())
                .build()
                .map_err(|e| tok_err(path, e))?;
            bert_pipeline(model, lowercase, path)?
        } else {
            Tokenizer::from_file(path).map_err(|e| tok_err(path, e))?
        };
        Self::wrap(inner, max_len, path)
    }

    /// Whether the BERT in `dir` lower-cases its input: `do_lower_case` of its
    /// `tokenizer_config.json` (Hugging Face's layout), `true` (uncased) when it has none.
    /// Only a bare `vocab.txt` needs this; a `tokenizer.json` carries its own normaliser.
    pub fn bert_lowercase(dir: &Path) -> Result<bool> {
        let p = dir.join("tokenizer_config.json");
        if !p.is_file() {
            return Ok(true);
        }
        let text = std::fs::read_to_string(&p).map_err(|e| tok_err(&p, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| tok_err(&p, e))?;
        match v.get("do_lower_case") {
            None => Ok(true),
            Some(serde_json::Value::Bool(b)) => Ok(*b),
            Some(other) => Err(tok_err(
                &p,
                format!("do_lower_case is {other}, not true or false"),
            )),
        }
    }

    /// Learns a WordPiece vocabulary of at most `vocab_size` entries from `reports`.
    ///
    /// Deterministic (a pure function of the reports, unlike the `tokenizers` trainers, whose
    /// tie-breaking follows hash-map order): the special tokens, every character seen (alone
    /// and as a `##` continuation), then whole words by descending frequency (ties by spelling)
    /// until `vocab_size`. Words outside the vocabulary fall back to characters, never `[UNK]`.
    pub fn learn(reports: &[String], vocab_size: usize, max_len: usize) -> Result<Self> {
        let path = Path::new("<learned from the training reports>");
        if reports.is_empty() {
            return Err(tok_err(path, "no reports to learn a vocabulary from"));
        }
        let normalizer = BertNormalizer::new(true, true, None, true);
        let mut counts: HashMap<String, u64> = HashMap::new();
        for r in reports {
            let mut ns = NormalizedString::from(r.as_str());
            normalizer
                .normalize(&mut ns)
                .map_err(|e| tok_err(path, e))?;
            let mut pts = PreTokenizedString::from(ns);
            BertPreTokenizer
                .pre_tokenize(&mut pts)
                .map_err(|e| tok_err(path, e))?;
            for (word, _, _) in pts.get_splits(OffsetReferential::Original, OffsetType::Byte) {
                *counts.entry(word.to_string()).or_default() += 1;
            }
        }
        let mut chars: Vec<char> = counts.keys().flat_map(|w| w.chars()).collect();
        chars.sort_unstable();
        chars.dedup();
        let mut vocab: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
        vocab.extend(chars.iter().map(|c| c.to_string()));
        vocab.extend(chars.iter().map(|c| format!("##{c}")));
        if vocab.len() > vocab_size {
            return Err(DataError::Config {
                field: "text.vocab_size".into(),
                message: format!(
                    "{vocab_size} is too small: the reports use {} distinct characters, which need {} entries",
                    chars.len(),
                    vocab.len()
                ),
            });
        }
        let mut words: Vec<(&String, &u64)> = counts
            .iter()
            .filter(|(w, _)| w.chars().count() > 1)
            .collect();
        words.sort_unstable_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let room = vocab_size - vocab.len();
        vocab.extend(words.into_iter().take(room).map(|(w, _)| w.clone()));
        let map: ahash::AHashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let model = WordPiece::builder()
            .vocab(map)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| tok_err(path, e))?;
        Self::wrap(bert_pipeline(model, true, path)?, max_len, path)
    }

    fn wrap(inner: Tokenizer, max_len: usize, path: &Path) -> Result<Self> {
        if max_len < 3 {
            return Err(DataError::Config {
                field: "text.max_len".into(),
                message: format!("{max_len} is too short (at least 3: [CLS] word [SEP])"),
            });
        }
        let pad_id = inner
            .token_to_id("[PAD]")
            .or_else(|| inner.token_to_id("<pad>"))
            .unwrap_or(0);
        Ok(Self {
            inner,
            max_len,
            pad_id,
            source: path.into(),
        })
    }

    /// Saves as a Hugging Face `tokenizer.json` (what [`from_file`](Self::from_file) reads back).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        self.inner.save(&tmp, true).map_err(|e| tok_err(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
    }

    /// The vocabulary in id order (special tokens included): what the embedding rows of a
    /// text encoder trained with this tokenizer stand for.
    pub fn vocab_in_order(&self) -> Vec<String> {
        let mut v: Vec<(u32, String)> = self
            .inner
            .get_vocab(true)
            .into_iter()
            .map(|(t, id)| (id, t))
            .collect();
        v.sort();
        v.into_iter().map(|(_, t)| t).collect()
    }

    /// Size of the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Sequence length of every encoding.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Id used for padding.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id of `token`, if in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokenises one report to exactly `max_len` ids.
    pub fn encode(&self, text: &str) -> Result<Tokens> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| tok_err(&self.source, format!("cannot encode {text:?}: {e}")))?;
        let mut ids: Vec<u32> = enc.get_ids().to_vec();
        let truncated = ids.len() > self.max_len;
        if truncated {
            // Keep the closing special token (e.g. [SEP]) when truncating.
            let last = ids[ids.len() - 1];
            ids.truncate(self.max_len);
            if enc.get_special_tokens_mask().last() == Some(&1) {
                ids[self.max_len - 1] = last;
            }
        }
        let n = ids.len();
        let mut attention = vec![1u32; n];
        ids.resize(self.max_len, self.pad_id);
        attention.resize(self.max_len, 0);
        Ok(Tokens {
            ids,
            attention,
            truncated,
        })
    }

    /// How many tokens `text` has, special tokens included, before [`encode`](Self::encode)
    /// cuts it to `max_len`.
    pub fn token_count(&self, text: &str) -> Result<usize> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| tok_err(&self.source, format!("cannot encode {text:?}: {e}")))?;
        Ok(enc.get_ids().len())
    }

    /// The tokens of `text` as strings (for inspection and tests).
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| tok_err(&self.source, e))?;
        Ok(enc.get_tokens().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports() -> Vec<String> {
        [
            "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.",
            "Unilateral pulmonary infection, one infected area, middle left lung.",
            "No pulmonary infection, zero infected areas.",
            "one infected areas, all right lung..",
            "The nuclei density in the upper right is high.",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// A cased BERT's vocab.txt is read cased: `do_lower_case = false` in its
    /// tokenizer_config.json keeps "Left" apart from "left".
    #[test]
    fn a_cased_bert_keeps_case() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Left", "left", "lung",
        ];
        std::fs::write(dir.path().join("vocab.txt"), vocab.join("\n")).unwrap();
        assert!(TextTokenizer::bert_lowercase(dir.path()).unwrap());
        let cfg = dir.path().join("tokenizer_config.json");
        std::fs::write(&cfg, r#"{"do_lower_case": false}"#).unwrap();
        let cased = TextTokenizer::bert_lowercase(dir.path()).unwrap();
        assert!(!cased);
        let t = TextTokenizer::from_file(&dir.path().join("vocab.txt"), 8, cased).unwrap();
        assert_eq!(
            t.tokens("Left lung").unwrap(),
            ["[CLS]", "Left", "lung", "[SEP]"]
        );
        let t = TextTokenizer::from_file(&dir.path().join("vocab.txt"), 8, true).unwrap();
        assert_eq!(
            t.tokens("Left lung").unwrap(),
            ["[CLS]", "left", "lung", "[SEP]"]
        );
        std::fs::write(&cfg, r#"{"do_lower_case": "yes"}"#).unwrap();
        let e = TextTokenizer::bert_lowercase(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokenizer_config.json") && e.contains("do_lower_case"),
            "{e}"
        );
    }

    #[test]
    fn learned_vocabulary_encodes_fixed_length_with_specials() {
        let t = TextTokenizer::learn(&reports(), 200, 12).unwrap();
        for _ in 0..5 {
            let again = TextTokenizer::learn(&reports(), 200, 12).unwrap();
            assert_eq!(
                again.encode(&reports()[0]).unwrap(),
                t.encode(&reports()[0]).unwrap(),
                "deterministic"
            );
        }
        assert_eq!(t.tokens("lung").unwrap(), ["[CLS]", "lung", "[SEP]"]);
        assert_eq!(
            t.tokens("lungz").unwrap(),
            ["[CLS]", "lung", "##z", "[SEP]"],
            "unseen word falls back to pieces"
        );
        assert!(TextTokenizer::learn(&reports(), 20, 12)
            .unwrap_err()
            .to_string()
            .contains("text.vocab_size"));
        assert!(t.vocab_size() > SPECIAL_TOKENS.len() && t.vocab_size() <= 200);
        assert_eq!(t.pad_id(), 0);
        let e = t.encode("upper left lung").unwrap();
        assert_eq!(e.ids.len(), 12);
        assert_eq!(e.ids[0], t.token_to_id("[CLS]").unwrap());
        let n = e.attention.iter().filter(|&&a| a == 1).count();
        assert_eq!(e.ids[n - 1], t.token_to_id("[SEP]").unwrap());
        assert!(e.ids[n..].iter().all(|&i| i == 0));
        assert!(!e.ids[1..n - 1].contains(&t.token_to_id("[UNK]").unwrap()));
        // Long input: truncated, still closed by [SEP].
        let long = t.encode(&reports()[0].repeat(4)).unwrap();
        assert_eq!(long.ids.len(), 12);
        assert_eq!(long.ids[11], t.token_to_id("[SEP]").unwrap());
        assert!(long.attention.iter().all(|&a| a == 1));
    }

    #[test]
    fn save_and_reload_gives_identical_ids() {
        let dir = tempfile::tempdir().unwrap();
        let t = TextTokenizer::learn(&reports(), 150, 16).unwrap();
        let p = dir.path().join("tokenizer.json");
        t.save(&p).unwrap();
        let u = TextTokenizer::from_file(&p, 16, true).unwrap();
        for r in reports() {
            assert_eq!(t.encode(&r).unwrap(), u.encode(&r).unwrap());
        }
    }

    #[test]
    fn bert_vocab_txt_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vocab.txt");
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "upper", "left", "lung", "##s", ".",
        ];
        std::fs::write(&p, words.join("\n")).unwrap();
        let t = TextTokenizer::from_file(&p, 8, true).unwrap();
        assert_eq!(
            t.tokens("Upper LEFT lungs.").unwrap(),
            ["[CLS]", "upper", "left", "lung", "##s", ".", "[SEP]"]
        );
        assert_eq!(t.encode("upper zzz").unwrap().ids[..4], [2, 5, 1, 3]);
    }

    #[test]
    fn missing_file_is_named() {
        let e = TextTokenizer::from_file(Path::new("/nope/tokenizer.json"), 8, true).unwrap_err();
        assert!(e.to_string().contains("/nope/tokenizer.json"), "{e}");
    }
}
