//! Rendering: one function per kind of output, text or JSON.

use syncline::check::{Finding, Severity};
use syncline::config::Config;
use syncline::engine::{DirectionCounts, Explanation, RunReport};
use syncline::model::Key;
use syncline::state::{ConflictRow, JournalEntry, QuarantineRow, StateStore};

pub struct Output {
    pub json: bool,
}

fn key_text(encoded: &str) -> String {
    Key::decode(encoded)
        .map(|k| k.display_text())
        .unwrap_or_else(|_| encoded.to_string())
}

fn values_text(vs: &[syncline::model::Value]) -> String {
    vs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn direction(d: &DirectionCounts) -> String {
    let mut s = format!(
        "{} created, {} updated, {} deleted",
        d.created, d.updated, d.deleted
    );
    if d.stale_skipped > 0 {
        s.push_str(&format!(", {} stale skipped", d.stale_skipped));
    }
    if d.rejected > 0 {
        s.push_str(&format!(", {} rejected", d.rejected));
    }
    s
}

impl Output {
    pub fn message(&self, text: &str, json: serde_json::Value) {
        if self.json {
            println!("{json}");
        } else {
            println!("{text}");
        }
    }

    pub fn findings(&self, config: &Config, findings: &[Finding]) {
        if self.json {
            println!(
                "{}",
                serde_json::json!({ "file": config.source.file, "findings": findings })
            );
            return;
        }
        for f in findings {
            let sev = match f.severity {
                Severity::Info => "info",
                Severity::Warning => "warning",
                Severity::Error => "error",
            };
            println!(
                "{}:{}:{}: {sev} [{}] {}",
                config.source.file.display(),
                f.line,
                f.column,
                f.rule,
                f.message
            );
        }
        let errors = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        let warnings = findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count();
        println!(
            "{} link(s) checked: {errors} error(s), {warnings} warning(s)",
            config.links.len()
        );
    }

    pub fn report(&self, report: &RunReport, is_plan: bool) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string(report).expect("report serializes")
            );
            return;
        }
        for l in &report.links {
            println!("link {} ({})", l.link, l.shape);
            println!(
                "  records: {} left, {} right (read: {})",
                l.left_records, l.right_records, l.reading
            );
            let verb = if is_plan { "would write" } else { "wrote" };
            println!("  left → right {verb}: {}", direction(&l.to_right));
            println!("  right → left {verb}: {}", direction(&l.to_left));
            println!(
                "  unchanged {} · echoes suppressed {} · conflicts {} · quarantined {}{}",
                l.unchanged,
                l.echoes_suppressed,
                l.conflicts,
                l.quarantined,
                if l.drift_reported > 0 {
                    format!(" · drift reported {}", l.drift_reported)
                } else {
                    String::new()
                }
            );
            for w in &l.warnings {
                println!("  warning: {w}");
            }
            if !l.planned.is_empty() {
                println!(
                    "  {} ({} of {}):",
                    if is_plan { "plan" } else { "changes" },
                    l.planned.len(),
                    l.planned_total
                );
                for p in &l.planned {
                    let field = p
                        .field
                        .as_deref()
                        .map(|f| format!(" {f}"))
                        .unwrap_or_default();
                    let change = match (&p.old, &p.new) {
                        (Some(o), Some(n)) => format!(": {o} → {n}"),
                        (None, Some(n)) => format!(": → {n}"),
                        _ => String::new(),
                    };
                    println!(
                        "    {} {} {}{field}{change}  ({})",
                        p.op, p.side, p.key, p.reason
                    );
                }
            }
            if let Some(why) = &l.refused {
                println!("  REFUSED: {why}");
            }
            if let Some(holder) = &l.busy {
                println!("  BUSY: another run holds this link: {holder}");
            }
        }
        if is_plan {
            println!("plan only: nothing was written.");
        } else if report.refused() {
            println!("a safety valve refused a link: nothing was written for it.");
        }
        if report.busy() {
            println!(
                "a link another run was working on was left alone: nothing was read or written for it; run again once that run is done."
            );
        }
        if report.needs_attention() {
            println!(
                "needs a person: see `syncline conflicts list` and `syncline quarantine list`."
            );
        }
    }

    pub fn verify(&self, report: &syncline::engine::VerifyReport) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string(report).expect("a report serializes")
            );
            return;
        }
        for l in &report.links {
            println!(
                "link {}: {} left, {} right, {} pairs compared: {}",
                l.link,
                l.left_records,
                l.right_records,
                l.pairs_compared,
                if l.in_step() { "in step" } else { "drift" }
            );
            let key = |k: &Option<String>| k.as_deref().unwrap_or("-").to_string();
            for (field, d) in &l.fields {
                println!("  {field}: {} record(s) differ", d.records);
                for e in &d.first {
                    println!(
                        "    left:{} = {}  ≠  right:{} = {}",
                        key(&e.left_key),
                        e.left.as_deref().unwrap_or(""),
                        key(&e.right_key),
                        e.right.as_deref().unwrap_or("")
                    );
                }
            }
            for (label, d, side) in [
                ("only on the left", &l.only_left, "left"),
                ("only on the right", &l.only_right, "right"),
            ] {
                if d.records > 0 {
                    let keys: Vec<String> = d
                        .first
                        .iter()
                        .map(|e| {
                            format!(
                                "{side}:{}",
                                key(if side == "left" {
                                    &e.left_key
                                } else {
                                    &e.right_key
                                })
                            )
                        })
                        .collect();
                    println!("  {label}: {} record(s) ({})", d.records, keys.join(", "));
                }
            }
        }
    }

    pub fn status(&self, config: &Config, state: &mut StateStore) -> anyhow::Result<()> {
        let runs = state.last_runs(5)?;
        let conflicts = state.conflicts(None)?;
        let quarantine = state.quarantine(None)?;
        if self.json {
            let links: Vec<_> = config
                .links
                .iter()
                .map(|l| {
                    serde_json::json!({
                        "link": l.name,
                        "shape": l.shape(),
                        "pairs": state.pair_count(&l.name).unwrap_or(0),
                        "open_conflicts": conflicts.iter().filter(|c| c.link == l.name && c.status == "open").count(),
                        "quarantined": quarantine.iter().filter(|q| q.link == l.name).count(),
                        "running": state.link_holder(&l.name).unwrap_or(None),
                        "reads": reads_of(l, state),
                        "feeds": syncline::engine::feed_slots(config, l).into_iter().map(|(side, slot, retained)| serde_json::json!({
                            "side": side, "slot": slot,
                            "retained_bytes": retained.as_ref().ok().copied().flatten(),
                            "error": retained.err(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!("{}", serde_json::json!({ "links": links, "runs": runs }));
            return Ok(());
        }
        for l in &config.links {
            println!(
                "link {} ({}): {} linked pairs, {} open conflicts, {} quarantined",
                l.name,
                l.shape(),
                state.pair_count(&l.name)?,
                conflicts
                    .iter()
                    .filter(|c| c.link == l.name && c.status == "open")
                    .count(),
                quarantine.iter().filter(|q| q.link == l.name).count()
            );
            if let Some(holder) = state.link_holder(&l.name)? {
                println!("  running now: {holder}");
            }
            if let Some(reads) = reads_of(l, state) {
                println!("  reads: {}", reads["summary"].as_str().unwrap_or(""));
            }
            for (side, slot, retained) in syncline::engine::feed_slots(config, l) {
                match retained {
                    Ok(Some(bytes)) => {
                        println!(
                            "  {side} change feed: slot `{slot}` holds back {} kB of WAL",
                            bytes / 1024
                        );
                        if bytes > config.watch.max_feed_lag_bytes / 2 {
                            println!(
                                "  warning: slot `{slot}` holds back WAL the server cannot free until the link runs; run or watch the link, or drop the slot if the link is retired"
                            );
                        }
                    }
                    Ok(None) => println!(
                        "  {side} change feed: slot `{slot}` not made yet (the next run makes it and reads in full)"
                    ),
                    Err(e) => println!("  {side} change feed: slot `{slot}` cannot be read: {e}"),
                }
            }
        }
        if runs.is_empty() {
            println!("no runs yet: `syncline plan`, then `syncline run`.");
        }
        for r in runs {
            println!(
                "run {} {} {} ({})",
                r["run"],
                r["started_at"].as_str().unwrap_or(""),
                r["command"].as_str().unwrap_or(""),
                r["status"].as_str().unwrap_or("")
            );
        }
        Ok(())
    }

    pub fn conflicts(&self, rows: &[ConflictRow]) {
        if self.json {
            let rows: Vec<_> = rows
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "link": c.link, "left_key": key_text(&c.left_key), "right_key": key_text(&c.right_key),
                        "field": c.unit, "left": c.left_value.iter().map(|v| v.to_json()).collect::<Vec<_>>(),
                        "right": c.right_value.iter().map(|v| v.to_json()).collect::<Vec<_>>(),
                        "base": c.base_value.as_ref().map(|b| b.iter().map(|v| v.to_json()).collect::<Vec<_>>()),
                        "cause": c.cause, "status": c.status,
                        "resolution": c.resolution.as_ref().map(|b| b.iter().map(|v| v.to_json()).collect::<Vec<_>>()),
                        "detected_run": c.detected_run,
                    })
                })
                .collect();
            println!("{}", serde_json::json!({ "conflicts": rows }));
            return;
        }
        if rows.is_empty() {
            println!("no conflicts.");
        }
        for c in rows {
            println!(
                "{} left:{} right:{} {}: left {} | right {} | base {} — {} [{}]",
                c.link,
                key_text(&c.left_key),
                key_text(&c.right_key),
                c.unit,
                values_text(&c.left_value),
                values_text(&c.right_value),
                c.base_value.as_deref().map_or("(none)".into(), values_text),
                c.cause,
                c.status
            );
        }
        if rows.iter().any(|c| c.status == "open") {
            println!(
                "resolve with: syncline conflicts resolve LINK left:KEY FIELD --take left|right (or --value V)"
            );
        }
    }

    pub fn quarantine(&self, rows: &[QuarantineRow]) {
        if self.json {
            let rows: Vec<_> = rows
                .iter()
                .map(|q| serde_json::json!({ "link": q.link, "side": q.side, "key": key_text(&q.key), "field": q.field, "kind": q.kind, "reason": q.reason, "detected_run": q.detected_run }))
                .collect();
            println!("{}", serde_json::json!({ "quarantine": rows }));
            return;
        }
        if rows.is_empty() {
            println!("nothing quarantined.");
        }
        for q in rows {
            let field = if q.field.is_empty() {
                String::new()
            } else {
                format!(" {}", q.field)
            };
            println!(
                "{} {}:{}{field} [{}] {}",
                q.link,
                q.side,
                key_text(&q.key),
                q.kind,
                q.reason
            );
        }
    }

    pub fn journal(&self, entries: &[JournalEntry]) {
        if self.json {
            println!("{}", serde_json::json!({ "journal": entries }));
            return;
        }
        if entries.is_empty() {
            println!("the journal is empty for this filter.");
        }
        for e in entries {
            let field = e
                .field
                .as_deref()
                .map(|f| format!(" {f}"))
                .unwrap_or_default();
            let change = match (&e.old, &e.new) {
                (Some(o), Some(n)) => format!(": {o} → {n}"),
                (None, Some(n)) => format!(": → {n}"),
                _ => String::new(),
            };
            let records = match e.records {
                Some(n) => format!(" {n} records"),
                None => String::new(),
            };
            println!(
                "#{} run {} {} {} {} {} left:{} right:{}{field}{change}{records} ({}) [{}]",
                e.id,
                e.run,
                e.at,
                e.link,
                e.op,
                e.side,
                e.left_key.as_deref().unwrap_or("-"),
                e.right_key.as_deref().unwrap_or("-"),
                e.reason,
                e.status
            );
        }
    }

    pub fn explain(&self, x: &Explanation) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string(x).expect("explanation serializes")
            );
            return;
        }
        println!(
            "link {}: left:{} ⇄ right:{}{}",
            x.link,
            x.left_key.as_deref().unwrap_or("(none)"),
            x.right_key.as_deref().unwrap_or("(none)"),
            if x.linked { "" } else { " — not linked yet" }
        );
        let show = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .map_or("(absent)".to_string(), ToString::to_string)
        };
        for f in &x.fields {
            println!(
                "  {} (right: {}, owner {}, policy {}): {}",
                f.field, f.right_column, f.owner, f.policy, f.state
            );
            let left = match &f.left_as_held {
                Some(held) => format!("{held} (read as {})", show(&f.left)),
                None => show(&f.left),
            };
            println!(
                "    left {left} | right {} | base {}",
                show(&f.right),
                show(&f.base)
            );
            if let Some(w) = &f.last_write {
                println!(
                    "    last write: run {} at {} to the {}: {}",
                    w["run"],
                    w["at"].as_str().unwrap_or(""),
                    w["side"].as_str().unwrap_or(""),
                    w["reason"].as_str().unwrap_or("")
                );
            }
        }
        for c in &x.conflicts {
            println!("  conflict: {c}");
        }
        for q in &x.quarantine {
            println!("  quarantined: {q}");
        }
    }
}

/// How a link with `[changes]` reads its sides: each cursor and its position, and when
/// the next full read is due.
fn reads_of(
    link: &syncline::config::LinkSpec,
    state: &mut StateStore,
) -> Option<serde_json::Value> {
    let changes = link.changes.as_ref()?;
    let reads = state
        .link_reads(&link.name)
        .ok()
        .flatten()
        .unwrap_or_default();
    let sides: Vec<String> = ["left", "right"]
        .iter()
        .enumerate()
        .map(|(i, side)| match (&changes.cursor[i], &changes.feed[i]) {
            (Some(c), _) => match reads.position(i) {
                Some(p) => format!("{side} by `{}` at {p}", c.column),
                None => format!("{side} by `{}`, no position yet", c.column),
            },
            (None, Some(f)) => format!("{side} by its change feed (slot `{}`)", f.slot),
            (None, None) => format!("{side} read only in reconciliations"),
        })
        .collect();
    let due = changes.full_every.saturating_sub(reads.since_full + 1);
    let how = match changes.reconcile {
        syncline::config::Reconcile::Full => "a full read".to_string(),
        syncline::config::Reconcile::Digests => match &reads.ranges {
            [Some(l), Some(r)] => format!(
                "a reconciliation by digests ({} left, {} right key ranges)",
                l.bounds.len() + 1,
                r.bounds.len() + 1
            ),
            _ => format!(
                "a full read ({})",
                reads
                    .no_ranges
                    .as_deref()
                    .unwrap_or("key ranges not known yet")
            ),
        },
    };
    let no_cursor =
        changes.cursor.iter().all(Option::is_none) && changes.feed.iter().all(Option::is_none);
    let next_full = if !reads.clean || due == 0 || no_cursor {
        format!("the next cycle is {how}")
    } else {
        format!("{how} in {due} cycle(s)")
    };
    Some(serde_json::json!({
        "left": reads.position(0).map(|v| v.to_string()),
        "right": reads.position(1).map(|v| v.to_string()),
        "cycles_since_full": reads.since_full,
        "summary": format!("{}; {next_full}", sides.join(", ")),
    }))
}
