//! `[links.NAME.changes]`: how each side of a link is read on a cycle. Without it every
//! cycle reads both collections whole; with a cursor column, a cycle reads only the
//! records at or past where the last one got to (less a look-back window), and every
//! `full_every`-th cycle reads in full, which is what finds deletes.

use super::raw::{RawChanges, RawCursor, RawLookback};
use std::ops::Range;
use toml::Spanned;

/// A side read by a cursor column.
#[derive(Debug, Clone, PartialEq)]
pub struct CursorSpec {
    /// The column that grows with every change: a timestamp, or a version counter.
    pub column: String,
    /// How far behind the position a read starts again, so a change committed late with
    /// an older cursor value is not missed. Re-reading is harmless: what did not change
    /// since the base writes nothing.
    pub lookback: Lookback,
    pub span: Range<usize>,
}

/// A side whose changes come from PostgreSQL logical replication (`feed = "logical"`):
/// a slot with the `pgoutput` plugin, filtered by a publication of the collection.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedSpec {
    /// The replication slot (default `syncline_<link>_<side>`).
    pub slot: String,
    /// The publication (default: the slot's name), created for the collection if missing.
    pub publication: String,
    pub span: Range<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lookback {
    /// For timestamp and date columns (`"5s"`, `"2m"`, `"1h"`).
    Seconds(f64),
    /// For counters (`lookback = 100`).
    Steps(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChangesSpec {
    /// Per side (left, right): `None` reads that side only in reconciliations.
    pub cursor: [Option<CursorSpec>; 2],
    /// Per side: its change feed, if it has one.
    pub feed: [Option<FeedSpec>; 2],
    /// Every this many cycles, a reconciliation of both sides: deletes, and changes a
    /// cursor cannot see, are found then. Without cursors, every cycle is one.
    pub full_every: u32,
    pub reconcile: Reconcile,
    /// Records per key range for digests.
    pub range_size: usize,
    pub span: Range<usize>,
}

/// How a reconciliation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconcile {
    /// Both sides, whole.
    Full,
    /// Each side's key ranges whose digest (computed by the system) changed, and only
    /// those.
    Digests,
}

/// Records per key range when `range_size` is not given.
pub const DEFAULT_RANGE_SIZE: usize = 10_000;

/// Cycles between full reads when `full_every` is not given.
pub const DEFAULT_FULL_EVERY: u32 = 10;

pub(super) fn changes(
    raw: &Spanned<RawChanges>,
    link_name: &str,
) -> Result<ChangesSpec, (Range<usize>, String)> {
    let r = raw.get_ref();
    let cursor =
        |c: &Option<Spanned<RawCursor>>| -> Result<Option<CursorSpec>, (Range<usize>, String)> {
            let Some(c) = c else { return Ok(None) };
            let rc = c.get_ref();
            let Some(cursor) = &rc.cursor else {
                if rc.feed.is_none() {
                    return Err((
                        c.span(),
                        "a side of [changes] names a `cursor` column or a `feed = \"logical\"`"
                            .into(),
                    ));
                }
                return Ok(None);
            };
            let column = cursor.get_ref().trim().to_string();
            if column.is_empty() {
                return Err((cursor.span(), "`cursor` names a column".into()));
            }
            let lookback = match &rc.lookback {
                None => Lookback::Seconds(5.0),
                Some(l) => match l.get_ref() {
                    RawLookback::Steps(n) if *n >= 0 => Lookback::Steps(*n),
                    RawLookback::Steps(_) => {
                        return Err((l.span(), "`lookback` cannot be negative".into()));
                    }
                    RawLookback::Duration(text) => {
                        Lookback::Seconds(duration_seconds(text).map_err(|m| {
                            (
                                l.span(),
                                format!("lookback {m} (or a count, for a counter column)"),
                            )
                        })?)
                    }
                },
            };
            Ok(Some(CursorSpec {
                column,
                lookback,
                span: c.span(),
            }))
        };
    let full_every = match &r.full_every {
        None => DEFAULT_FULL_EVERY,
        Some(n) if (1..=1_000_000).contains(n.get_ref()) => *n.get_ref() as u32,
        Some(n) => {
            return Err((n.span(), "full_every must be between 1 and 1000000".into()));
        }
    };
    let reconcile = match r
        .reconcile
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None | Some(("full", _)) => Reconcile::Full,
        Some(("digests", _)) => Reconcile::Digests,
        Some((other, span)) => {
            return Err((span, format!("reconcile `{other}` is not full or digests")));
        }
    };
    let range_size = match &r.range_size {
        None => DEFAULT_RANGE_SIZE,
        Some(n) if (2..=10_000_000).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            return Err((n.span(), "range_size must be between 2 and 10000000".into()));
        }
    };
    let feed = |c: &Option<Spanned<RawCursor>>,
                side: &str|
     -> Result<Option<FeedSpec>, (Range<usize>, String)> {
        let Some(c) = c else { return Ok(None) };
        let rc = c.get_ref();
        let Some(kind) = &rc.feed else {
            if let Some(extra) = rc.slot.as_ref().or(rc.publication.as_ref()) {
                return Err((
                    extra.span(),
                    "`slot` and `publication` go with `feed = \"logical\"`".into(),
                ));
            }
            return Ok(None);
        };
        if kind.get_ref() != "logical" {
            return Err((
                kind.span(),
                format!(
                    "feed `{}` is not known; the one feed is \"logical\" (PostgreSQL logical replication)",
                    kind.get_ref()
                ),
            ));
        }
        let name = |n: &Option<Spanned<String>>| -> Result<Option<String>, (Range<usize>, String)> {
            match n {
                None => Ok(None),
                Some(n) if valid_pg_name(n.get_ref()) => Ok(Some(n.get_ref().clone())),
                Some(n) => Err((
                    n.span(),
                    format!(
                        "`{}` is not a replication slot or publication name: lower-case letters, digits and `_`, at most 63",
                        n.get_ref()
                    ),
                )),
            }
        };
        let default = format!("syncline_{}_{side}", link_name.to_lowercase())
            .chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
            .take(63)
            .collect::<String>();
        let slot = name(&rc.slot)?;
        let publication = name(&rc.publication)?;
        Ok(Some(FeedSpec {
            publication: publication.unwrap_or_else(|| slot.clone().unwrap_or(default.clone())),
            slot: slot.unwrap_or(default),
            span: kind.span(),
        }))
    };
    let spec = ChangesSpec {
        cursor: [cursor(&r.left)?, cursor(&r.right)?],
        feed: [feed(&r.left, "left")?, feed(&r.right, "right")?],
        full_every,
        reconcile,
        range_size,
        span: raw.span(),
    };
    if spec.cursor.iter().all(Option::is_none)
        && spec.feed.iter().all(Option::is_none)
        && reconcile == Reconcile::Full
    {
        return Err((
            raw.span(),
            "[changes] names a cursor for `left`, `right` or both (`left = { cursor = \"updated_at\" }`), or `reconcile = \"digests\"`".into(),
        ));
    }
    Ok(spec)
}

/// What PostgreSQL takes as a slot or publication name without quoting.
fn valid_pg_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `"5s"`, `"1.5m"`, `"2h"`, `"1d"`, or a bare number of seconds.
pub(crate) fn duration_seconds(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(format!("`{text}`: unit `{other}` is not ms, s, m, h or d"));
        }
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n >= 0.0 && n.is_finite() => Ok(n * scale),
        _ => Err(format!("`{text}` is not a duration like \"5s\" or \"2m\"")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lookbacks_read_in_their_units() {
        assert_eq!(super::duration_seconds("5s"), Ok(5.0));
        assert_eq!(super::duration_seconds("1.5m"), Ok(90.0));
        assert_eq!(super::duration_seconds("250ms"), Ok(0.25));
        assert_eq!(super::duration_seconds("2"), Ok(2.0));
        assert!(super::duration_seconds("5 weeks").is_err());
        assert!(super::duration_seconds("-1s").is_err());
    }
}
