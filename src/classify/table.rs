//! The rule table compiled for matching: one [`RegexSet`] over every row that has a text
//! pattern, and a sorted index of every code, both built once.

use std::sync::LazyLock;

use regex::{RegexSet, RegexSetBuilder};

use super::rules::{self, Matcher, RULES, Rule};

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
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }
}

/// The compiled table.
pub(crate) struct Table {
    pub(crate) rules: &'static [Rule],
    set: RegexSet,
    /// The row of each pattern of `set`.
    set_rows: Vec<usize>,
    /// Every code, lowercased, with its row: sorted, for lookups by value.
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
    pub(crate) fn new(rules: &'static [Rule]) -> Result<Self, regex::Error> {
        let (set_rows, patterns): (Vec<usize>, Vec<String>) = rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| rules::text_pattern(r).map(|p| (i, p)))
            .unzip();
        let set = RegexSetBuilder::new(patterns)
            .unicode(false)
            .size_limit(64 << 20)
            .dfa_size_limit(32 << 20)
            .build()?;
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
        codes.sort();
        Ok(Self {
            rules,
            set,
            set_rows,
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
        let start = codes.partition_point(|(c, _)| c.as_bytes() < key);
        let end = start + codes[start..].partition_point(|(c, _)| c.as_bytes() == key);
        &codes[start..end]
    }

    /// Every row that the codes (structured fields) or the texts match, whatever the provider.
    pub(crate) fn hits<'c>(&self, codes: impl Iterator<Item = &'c str>, texts: &[&str]) -> Hits {
        let mut hits = Hits::default();
        for code in codes {
            for i in self.code_rows(code) {
                hits.insert(i);
            }
        }
        for text in texts {
            for p in self.set.matches(text).iter() {
                if let Some(&i) = self.set_rows.get(p) {
                    hits.insert(i);
                }
            }
        }
        hits
    }
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
