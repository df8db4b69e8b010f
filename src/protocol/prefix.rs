//! What every protocol's stream resume keeps of a broken answer: its text so far, as the
//! assistant prefill of the continuation.

/// The text a reader was given, and what the continuation still owes it.
///
/// The prefill is the text without its trailing whitespace (Anthropic rejects a final
/// assistant message that ends with whitespace; the continuation starts with it instead), so
/// the whitespace left off is *owed*: it is dropped from the start of the continuation's
/// text, once.
#[derive(Debug, Default)]
pub(crate) struct Prefix {
    text: String,
    /// Content pieces streamed: the tokens the answer used (one a piece).
    tokens: u64,
    /// Leading whitespace still to drop from the continuation (what the prefill left off).
    owed: usize,
}

impl Prefix {
    /// The reader was given `text`.
    pub(crate) fn push(&mut self, text: &str) {
        if !text.is_empty() {
            self.text.push_str(text);
            self.tokens += 1;
        }
    }

    /// The tokens streamed (one per non-empty piece).
    pub(crate) fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Whether there is text worth continuing, within the request's completion `limit`.
    pub(crate) fn continuable(&self, limit: Option<u64>) -> bool {
        limit.is_none_or(|max| max > self.tokens) && !self.text.trim().is_empty()
    }

    /// A completion limit of `max` tokens less those already streamed (at least one).
    pub(crate) fn left_of(&self, max: u64) -> u64 {
        max.saturating_sub(self.tokens).max(1)
    }

    /// The prefill for a continuation: the text without its trailing whitespace, which the
    /// continuation now owes.
    pub(crate) fn prefill(&mut self) -> &str {
        let prefill = self.text.trim_end();
        self.owed = self.text.len() - prefill.len();
        prefill
    }

    /// A piece of the continuation's text, less the whitespace it owes: `None` when nothing
    /// had to go.
    pub(crate) fn pay(&mut self, content: &str) -> Option<String> {
        if self.owed == 0 {
            return None;
        }
        let mut drop = 0;
        for c in content.chars().take_while(|c| c.is_whitespace()) {
            if drop + c.len_utf8() > self.owed {
                break;
            }
            drop += c.len_utf8();
        }
        let rest = &content[drop..];
        // The owed whitespace is paid, or the continuation did not start with it.
        self.owed = if rest.is_empty() { self.owed - drop } else { 0 };
        Some(rest.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::Prefix;

    #[test]
    fn the_whitespace_the_prefill_leaves_off_is_taken_from_the_continuation_once() {
        let mut p = Prefix::default();
        for t in ["The ", "quick ", ""] {
            p.push(t);
        }
        assert_eq!(p.tokens(), 2);
        assert_eq!(p.prefill(), "The quick");
        // The continuation starts with the space the reader already has.
        assert_eq!(p.pay(" brown").as_deref(), Some("brown"));
        // Paid: the next piece is untouched.
        assert_eq!(p.pay(" fox"), None);
    }

    #[test]
    fn a_continuation_that_does_not_start_with_the_whitespace_keeps_its_text() {
        let mut p = Prefix::default();
        p.push("Hello\n\n");
        assert_eq!(p.prefill(), "Hello");
        // Whitespace arriving in pieces is paid in pieces.
        assert_eq!(p.pay("\n").as_deref(), Some(""));
        assert_eq!(p.pay("\nWorld").as_deref(), Some("World"));
        let mut q = Prefix::default();
        q.push("Hi ");
        assert_eq!(q.prefill(), "Hi");
        assert_eq!(q.pay("there").as_deref(), Some("there"));
        assert_eq!(q.pay(" you"), None);
    }

    #[test]
    fn blank_text_or_a_spent_limit_is_not_continued() {
        let mut p = Prefix::default();
        p.push("  ");
        assert!(!p.continuable(None));
        p.push("word");
        assert!(p.continuable(None));
        assert!(p.continuable(Some(3)));
        assert!(!p.continuable(Some(2)));
        assert_eq!(p.left_of(10), 8);
        assert_eq!(p.left_of(1), 1);
    }
}
