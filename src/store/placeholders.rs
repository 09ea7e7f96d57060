//! Bind placeholders for statements built at run time with many values (multi-row
//! inserts, `IN (…)` lists), and the few sizes those statements come in.
//!
//! Why a few sizes: sqlx keeps each connection's prepared statements by their text.
//! A statement written for exactly n rows would be a new text for nearly every batch,
//! compiled every time (on SQLite about 2 µs per row and statement, and a fire batch
//! writes several; a parse and plan on PostgreSQL), pushing the cached ones out. So
//! rows go in statements of power-of-two sizes ([`statement_chunks`]), and `IN (…)`
//! lists are padded to a power of two by repeating their last value ([`padded`]): the
//! same few texts come back and each is compiled once.

use super::{Backend, Tx};

/// Most rows (or `IN` list entries) in one statement: 512 rows of 11 values stay
/// within every driver's limit on binds.
pub const MAX_ROWS: usize = 512;

/// `rows` in consecutive slices whose lengths are powers of two of at most
/// [`MAX_ROWS`], largest first (1,000 rows: 512, 256, 128, 64, 32, 8): at most one
/// statement per bit of the count, each with a text seen before.
pub fn statement_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let take = prev_power_of_two(rest.len().min(MAX_ROWS));
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        Some(chunk)
    })
}

fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// How many placeholders an `IN (…)` list of `n` values gets: the next power of two
/// (0 for none).
pub fn padded_len(n: usize) -> usize {
    if n == 0 { 0 } else { n.next_power_of_two() }
}

/// The values to bind for an `IN (…)` list of [`padded_len`] placeholders: `items`,
/// then the last one again until the list is full (a value repeated in an `IN` list
/// changes nothing).
pub fn padded<T>(items: &[T]) -> impl Iterator<Item = &T> {
    let pad = padded_len(items.len()) - items.len();
    items
        .iter()
        .chain(std::iter::repeat_n(items.last(), pad).flatten())
}

/// Bind placeholders for statements with many binds, written in the order the values
/// are bound (each value bound once). SQLite gets anonymous `?`: it keeps numbered
/// parameters (`$N`) in a list that it scans once per parameter when parsing and again
/// when sqlx binds each value, so a statement with n numbered binds costs O(n²) (the top
/// of the firing profile with 1,400-bind statements). PostgreSQL needs `$N`.
pub struct Placeholders {
    numbered: bool,
    n: usize,
}

impl Placeholders {
    /// Placeholders for a statement run in `tx`.
    pub fn for_tx(tx: &Tx) -> Self {
        Self {
            numbered: tx.backend_name() != <sqlx::Sqlite as sqlx::Database>::NAME,
            n: 0,
        }
    }

    /// Placeholders for a statement run on `backend` (outside a transaction).
    pub fn for_backend(backend: Backend) -> Self {
        Self {
            numbered: backend == Backend::Postgres,
            n: 0,
        }
    }

    /// The next placeholder.
    pub fn one(&mut self) -> String {
        let mut s = String::new();
        self.push(&mut s);
        s
    }

    fn push(&mut self, sql: &mut String) {
        self.n += 1;
        if self.numbered {
            sql.push('$');
            sql.push_str(&self.n.to_string());
        } else {
            sql.push('?');
        }
    }

    /// `count` placeholders separated by commas: `?, ?, ?`.
    pub fn list(&mut self, count: usize) -> String {
        let mut sql = String::with_capacity(count * 6);
        for i in 0..count {
            if i > 0 {
                sql.push_str(", ");
            }
            self.push(&mut sql);
        }
        sql
    }

    /// [`Self::list`] for an `IN (…)` list of `count` values bound with [`padded`].
    pub fn padded_list(&mut self, count: usize) -> String {
        self.list(padded_len(count))
    }

    /// `rows` parenthesised groups of `width` placeholders: `(?, ?), (?, ?)`.
    pub fn rows(&mut self, rows: usize, width: usize) -> String {
        let mut sql = String::with_capacity(rows * (width * 6 + 4));
        for r in 0..rows {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            sql.push_str(&self.list(width));
            sql.push(')');
        }
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_in_power_of_two_statements_in_order() {
        let rows: Vec<usize> = (0..1_000).collect();
        let chunks: Vec<&[usize]> = statement_chunks(&rows).collect();
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![512, 256, 128, 64, 32, 8]);
        assert_eq!(chunks.concat(), rows, "every row once, in order");
        let sizes = |n: usize| {
            let rows = vec![0; n];
            statement_chunks(&rows).map(|c| c.len()).collect::<Vec<_>>()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), vec![1]);
        assert_eq!(sizes(7), vec![4, 2, 1]);
        assert_eq!(sizes(1_536), vec![512, 512, 512]);
        // Every size is a power of two within the limit.
        for n in 0..2_000 {
            assert!(
                sizes(n)
                    .iter()
                    .all(|s| s.is_power_of_two() && *s <= MAX_ROWS)
            );
            assert_eq!(sizes(n).iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn in_lists_are_padded_with_their_last_value() {
        let ids = [3, 1, 4, 1, 5];
        let bound: Vec<i32> = padded(&ids).copied().collect();
        assert_eq!(bound, vec![3, 1, 4, 1, 5, 5, 5, 5]);
        assert_eq!(padded_len(5), 8);
        assert_eq!(padded_len(8), 8);
        assert_eq!(padded_len(1), 1);
        assert_eq!(padded(&[] as &[i32]).count(), 0);
        let mut p = Placeholders {
            numbered: true,
            n: 0,
        };
        assert_eq!(p.padded_list(3), "$1, $2, $3, $4");
    }
}
