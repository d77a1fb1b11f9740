//! What kind of answer is asked for: the wh-word, and the thing a "how many" counts.
//!
//! "Where does photosynthesis take place?" and "When does photosynthesis take place?" share every
//! content word, and "A pound equals how many ounces?" and "How many pounds are in an ounce?" share
//! the units, but each pair asks for a different answer. Only the wh-words that fix an answer type
//! (who, where, when, why) count; "what", "which" and "how" trade places between paraphrases.

use super::lexicon::LEXICON;
use super::text::{Kind, Text};
use super::words::same_word;
use super::Reason;

/// What each "how many X" / "number of X" / "amount of X" in `tokens` counts (a unit in its canonical
/// form), given each token's kind.
pub(super) fn asked(tokens: &[String], kinds: &[Kind]) -> Vec<String> {
    let lex = &*LEXICON;
    let mut asked = Vec::new();
    for (i, w) in tokens.iter().enumerate() {
        let start = match w.as_str() {
            "many" | "much" if i > 0 && tokens[i - 1] == "how" => i + 1,
            "number" | "amount" if tokens.get(i + 1).is_some_and(|n| n == "of") => i + 2,
            _ => continue,
        };
        let mut j = start;
        while j < tokens.len() && kinds[j] == Kind::Stop {
            j += 1;
        }
        if j < tokens.len() && matches!(kinds[j], Kind::Content | Kind::Generic | Kind::Unit) {
            let t = tokens[j].as_str();
            asked.push(
                lex.units
                    .get(t)
                    .map_or_else(|| t.to_string(), |&(canon, _)| canon.to_string()),
            );
        }
    }
    asked
}

/// Why the answer types of `a` and `b` differ, if they do.
pub(super) fn conflict(a: &Text, b: &Text) -> Option<Reason> {
    if a.wh != 0 && b.wh != 0 && a.wh != b.wh {
        return Some(Reason::QuestionWord);
    }
    if !a.asked.is_empty()
        && !b.asked.is_empty()
        && !a
            .asked
            .iter()
            .any(|x| b.asked.iter().any(|y| same_word(x, y)))
    {
        return Some(Reason::AskedQuantity);
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::nearmiss::verdict;

    #[test]
    fn question_words_and_asked_quantities() {
        assert_eq!(
            verdict(
                "Where does photosynthesis take place?",
                "When does photosynthesis take place?"
            ),
            "question word"
        );
        assert_eq!(
            verdict(
                "A pound equals how many ounces?",
                "How many pounds are in an ounce?"
            ),
            "asked quantity"
        );
    }
}
