//! Bind placeholders for statements built at run time with many values (multi-row
//! inserts, `IN (…)` lists).

use super::{Backend, Tx};

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
