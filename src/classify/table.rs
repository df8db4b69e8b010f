//! The rule table compiled for matching: one [`RegexSet`] over every row that has a text
//! pattern, one regex for each row of codes of the first two tiers, and a sorted index of
//! every code, all built once.
//!
//! The regexes of single rows are what keep a structured answer cheap: when a code in a
//! structured field already decides in tier 1 or 2 (`rate_limit_exceeded` in an OpenAI body),
//! every wording, every class code and every row below it ranks below it, so only a code of a
//! row above it that may decide too (`insufficient_quota` under a 429) can still outrank it
//! when found in the text. Only those rows are looked for, each until its first match, and the
//! wordings are not scanned for.

use std::sync::LazyLock;

use regex_automata::meta::{self, BuildError};
use regex_automata::nfa::thompson::WhichCaptures;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind, PatternSet};

use super::rules::{self, Matcher, RULES, Rule, Tier};

/// A set of row indices (the table has fewer than 256 rows; a test checks it).
#[derive(Default, Clone)]
pub(crate) struct Hits([u64; 4]);

impl Hits {
    pub(crate) fn insert(&mut self, i: usize) {
        if let Some(word) = self.0.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
    }

    /// The rows, in table order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        // Set bits only, lowest first: an empty set costs four words, not 256 tests.
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            let mut rest = bits;
            std::iter::from_fn(move || {
                let b = rest.trailing_zeros() as usize;
                (rest != 0).then(|| {
                    rest &= rest - 1;
                    w * 64 + b
                })
            })
        })
    }
}

/// The compiled table.
pub(crate) struct Table {
    pub(crate) rules: &'static [Rule],
    /// Every row's text pattern.
    all: Patterns,
    /// The text pattern of each row of codes of tiers 1 and 2, alone, with its row, in table
    /// order.
    decisive: Vec<(usize, meta::Regex)>,
    /// Every code, lowercased, with its row: sorted [`by_length`], for lookups by value.
    codes: Vec<(String, usize)>,
}

/// The built-in table.
pub(crate) static TABLE: LazyLock<Table> = LazyLock::new(|| {
    #[expect(
        clippy::expect_used,
        reason = "the table is static; a unit test compiles it"
    )]
    Table::new(RULES).expect("the rule table compiles")
});

impl Table {
    /// Compiles `rules` (the built-in [`RULES`], or a variant of it in tests).
    pub(crate) fn new(rules: &'static [Rule]) -> Result<Self, Box<BuildError>> {
        let decisive =
            |r: &Rule| matches!(r.matcher, Matcher::Codes(_)) && r.tier <= Tier::Decisive;
        let mut codes: Vec<(String, usize)> = rules
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                let list: &[&str] = match r.matcher {
                    Matcher::Codes(c) => c,
                    Matcher::Words(_) => &[],
                };
                list.iter().map(move |c| (c.to_ascii_lowercase(), i))
            })
            .collect();
        codes.sort_by(|(a, i), (b, j)| (by_length(a), i).cmp(&(by_length(b), j)));
        Ok(Self {
            rules,
            all: Patterns::new(rules, |_| true)?,
            decisive: rules
                .iter()
                .enumerate()
                .filter(|(_, r)| decisive(r))
                .filter_map(|(i, r)| rules::text_pattern(r).map(|p| (i, p)))
                .map(|(i, p)| Ok((i, row_regex(&p)?)))
                .collect::<Result<_, Box<BuildError>>>()?,
            codes,
        })
    }

    /// The rows whose code is `value` (ASCII case-insensitive), in table order; a dotted code
    /// that is not in the table is looked up by its head (`Throttling.RateQuota`).
    pub(crate) fn code_rows(&self, value: &str) -> impl Iterator<Item = usize> + '_ {
        let exact = self.exact_rows(value);
        let rows = if exact.is_empty() {
            value
                .split_once('.')
                .map_or(&[][..], |(head, _)| self.exact_rows(head))
        } else {
            exact
        };
        rows.iter().map(|(_, i)| *i)
    }

    fn exact_rows(&self, value: &str) -> &[(String, usize)] {
        // Codes are short: compare lowercased, without allocating.
        let mut buf = [0_u8; 64];
        let Some(key) = buf.get_mut(..value.len()).map(|b| {
            b.copy_from_slice(value.as_bytes());
            b.make_ascii_lowercase();
            &*b
        }) else {
            return &[];
        };
        let codes = self.codes.as_slice();
        let start = codes.partition_point(|(c, _)| by_length(c) < by_length(key));
        let end = start + codes[start..].partition_point(|(c, _)| c.as_bytes() == key);
        &codes[start..end]
    }

    /// The rows that the codes (structured fields) or the texts match, whatever the provider:
    /// every one, unless the first row of the codes' rows that `decides` is a code row of tier
    /// 1 or 2; then the texts are searched only for the code rows above it that `decides` too
    /// (see the module docs), and the first row that decides is the same as with every row.
    pub(crate) fn hits<'c>(
        &self,
        codes: impl Iterator<Item = &'c str>,
        texts: &[&str],
        decides: impl Fn(&Rule) -> bool,
    ) -> Hits {
        let mut hits = Hits::default();
        for code in codes {
            for i in self.code_rows(code) {
                hits.insert(i);
            }
        }
        let settled = hits
            .iter()
            .find(|&i| decides(&self.rules[i]))
            .filter(|&i| self.rules[i].tier <= Tier::Decisive);
        let Some(settled) = settled else {
            for text in texts {
                self.all.insert_matches(text, &mut hits);
            }
            return hits;
        };
        let above = self.decisive.iter().take_while(|(i, _)| *i < settled);
        for (i, regex) in above {
            if decides(&self.rules[*i]) && texts.iter().any(|t| regex.is_match(*t)) {
                hits.insert(*i);
            }
        }
        hits
    }
}

/// The text patterns of some rows, as one set: a `regex::RegexSet` built the way `regex`
/// builds one.
struct Patterns {
    set: meta::Regex,
    /// The row of each pattern of `set`.
    rows: Vec<usize>,
}

impl Patterns {
    /// The patterns of the rows that `keep`.
    fn new(rules: &[Rule], keep: impl Fn(&Rule) -> bool) -> Result<Self, Box<BuildError>> {
        let (rows, patterns): (Vec<usize>, Vec<String>) = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| keep(r))
            .filter_map(|(i, r)| rules::text_pattern(r).map(|p| (i, p)))
            .unzip();
        let set = meta::Builder::new()
            .configure(
                meta::Config::new()
                    .match_kind(MatchKind::All)
                    .utf8_empty(true)
                    .which_captures(WhichCaptures::None)
                    .nfa_size_limit(Some(64 << 20))
                    .hybrid_cache_capacity(32 << 20),
            )
            .syntax(syntax())
            .build_many(&patterns)
            .map_err(Box::new)?;
        Ok(Self { set, rows })
    }

    /// Adds the rows whose pattern matches `text`.
    fn insert_matches(&self, text: &str, hits: &mut Hits) {
        let mut found = PatternSet::new(self.set.pattern_len());
        self.set
            .which_overlapping_matches(&Input::new(text), &mut found);
        for p in found.iter() {
            if let Some(&i) = self.rows.get(p.as_usize()) {
                hits.insert(i);
            }
        }
    }
}

/// The regex of one row's text pattern, for a yes or no.
fn row_regex(pattern: &str) -> Result<meta::Regex, Box<BuildError>> {
    meta::Builder::new()
        .configure(
            meta::Config::new()
                .utf8_empty(true)
                .which_captures(WhichCaptures::None),
        )
        .syntax(syntax())
        .build(pattern)
        .map_err(Box::new)
}

/// The syntax of the table's patterns: ASCII, like [`super::fixed_regex`].
fn syntax() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(true)
}

/// The order of the code index: by length first, so that most comparisons of a lookup are
/// of two lengths rather than of two strings.
fn by_length(code: &(impl AsRef<[u8]> + ?Sized)) -> (usize, &[u8]) {
    let bytes = code.as_ref();
    (bytes.len(), bytes)
}

/// Does `rule` apply to the provider hint?
pub(crate) fn provider_matches(rule: &Rule, provider: Option<&str>) -> bool {
    if rule.providers.is_empty() {
        return true;
    }
    provider.is_some_and(|given| {
        rule.providers.iter().any(|p| {
            given
                .get(..p.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(p))
        })
    })
}

/// What `matched` calls a deciding row: the code that matched in a structured field, else the
/// row's family (a code found in text, or a wording).
pub(crate) fn rule_name<'c>(
    rule: &Rule,
    mut field_codes: impl Iterator<Item = &'c str>,
) -> &'static str {
    let Matcher::Codes(list) = rule.matcher else {
        return rule.family;
    };
    field_codes
        .find_map(|f| {
            let head = f.split_once('.').map_or(f, |(h, _)| h);
            list.iter()
                .find(|c| c.eq_ignore_ascii_case(f) || c.eq_ignore_ascii_case(head))
        })
        .copied()
        .unwrap_or(rule.family)
}
