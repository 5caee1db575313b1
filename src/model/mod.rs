//! The data model shared by every layer: values, keys, records and sides.
//!
//! Nothing here does I/O. Values keep the exact type they were read with, so a value
//! written and read back compares equal (a value that does not would look like a change
//! every run and loop).

pub mod value;

pub use value::{Key, Value, ValueDecodeError};

/// A field or column name as plans and writes carry it: shared, so the millions of
/// records a run handles clone a pointer, not the text.
pub type Name = std::sync::Arc<str>;

use serde::{Deserialize, Serialize};
use std::fmt;

/// One of the two collections of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Left,
    Right,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record as read from a collection: its key and the values of the columns that were
/// asked for, in the order they were asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub key: Key,
    pub values: Vec<Value>,
    /// Why the record cannot be synced as read, if it cannot: a value its system holds
    /// that no [`Value`] represents faithfully (text that is not UTF-8). Such a record is
    /// quarantined with the reason instead of arriving altered.
    pub defect: Option<String>,
    /// The values as the system holds them, where `values` are translated into the
    /// link's one meaning (see `crate::meaning`): what a conditional write expects.
    pub raw: Option<Vec<Value>>,
    /// The record's version where its system keeps one (a row version, an ETag, a
    /// revision): what a write conditional by version expects.
    pub version: Option<Value>,
}

impl Record {
    pub fn new(key: Key, values: Vec<Value>) -> Record {
        Record {
            key,
            values,
            defect: None,
            raw: None,
            version: None,
        }
    }
}
