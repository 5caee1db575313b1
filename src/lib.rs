//! syncline: keeps records in step between systems of record.
//!
//! Layers, innermost first (see DESIGN.md):
//! - [`model`] and [`merge`]: values, records and the pure three-way merge;
//! - [`connectors`]: one module per system kind behind one trait;
//! - [`state`]: id map, base, journal, conflicts, quarantine, run history;
//! - [`engine`]: one cycle per link — read, match, merge, plan, journal, apply, commit;
//! - [`check`]: the config rules; the CLI lives in the binary.

pub mod check;
pub mod config;
pub mod connectors;
pub mod daemon;
pub mod decide;
pub mod engine;
mod error;
pub mod fault;
pub mod init;
pub mod meaning;
pub mod merge;
pub mod model;
pub mod state;

pub use error::{Error, without_details};
