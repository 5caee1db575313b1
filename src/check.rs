//! `check`: the design questions of DESIGN.md as lint rules over a loaded config.

use crate::config::{Config, DeleteRule, LinkSpec, Mode, Owner, Policy};
use crate::model::Side;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub link: String,
    pub line: usize,
    pub column: usize,
    pub rule: &'static str,
    pub message: String,
}

/// Lints every link. Errors mean a run would be unsafe; warnings ask you to say what you
/// mean; info states what the config does.
pub fn check(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    for link in &config.links {
        check_link(config, link, &mut out);
    }
    out
}

fn check_link(config: &Config, link: &LinkSpec, out: &mut Vec<Finding>) {
    let mut push = |severity, span: &std::ops::Range<usize>, rule, message: String| {
        let (line, column) = config.source.line_col(span.start);
        out.push(Finding {
            severity,
            link: link.name.clone(),
            line,
            column,
            rule,
            message,
        });
    };
    push(
        Severity::Info,
        &link.span,
        "shape",
        format!("link `{}` is {}", link.name, link.shape()),
    );

    if link.left.key_span.is_none() || link.right.key_span.is_none() {
        push(
            Severity::Warning,
            &link.span,
            "stable-key",
            "left_key / right_key not set: assuming `id`; say which column is the stable key"
                .into(),
        );
    }
    if !link.has_create_identity() {
        push(Severity::Warning, &link.span, "create-identity",
            "no match_on, no right_ref/left_ref and no carried key: a create interrupted by a crash cannot be found again (it could be duplicated), and a lost state store cannot re-link records".into());
    }
    match link.mode {
        Mode::TwoWay => {
            for unit in &link.units {
                if !unit.owner_explicit {
                    push(
                        Severity::Warning,
                        &unit.span,
                        "two-way-owner",
                        format!(
                            "field `{}` has no owner on a two-way link: it is `both`, decided by `{}`; say owner = \"left\", \"right\" or \"both\"",
                            unit.name,
                            link.policy_of(unit).as_str()
                        ),
                    );
                }
            }
            for (side, rule) in [
                (Side::Left, &link.on_delete_left),
                (Side::Right, &link.on_delete_right),
            ] {
                if rule.is_none() {
                    push(
                        Severity::Warning,
                        &link.span,
                        "delete-rule",
                        format!(
                            "no on_delete.{side} on a two-way link: deletes on the {side} are held for review; say propagate, ignore, soft:COLUMN=VALUE or hold"
                        ),
                    );
                }
            }
        }
        Mode::OneWay => {
            let back: Vec<&str> = link
                .units
                .iter()
                .filter(|u| u.owner != Owner::Left)
                .map(|u| u.name.as_str())
                .collect();
            if !back.is_empty() {
                push(
                    Severity::Warning,
                    &link.span,
                    "one-way-writes-back",
                    format!(
                        "one-way link writes back {} ({}): it is a {}; say so with mode = \"two-way\", or accept it",
                        back.join(", "),
                        if back.len() == 1 {
                            "1 field"
                        } else {
                            "several fields"
                        },
                        link.shape()
                    ),
                );
            }
            if link.on_delete_left.is_none() {
                push(Severity::Info, &link.span, "delete-rule",
                    "no on_delete.left: records deleted on the left are held for review, not deleted on the right".into());
            }
        }
    }
    for unit in &link.units {
        if unit.owner == Owner::Both && unit.policy.is_none() && link.conflict.is_none() {
            push(
                Severity::Warning,
                &unit.span,
                "both-without-policy",
                format!(
                    "field `{}` is owned by both without a conflict policy: conflicts are held for a person (manual); set conflict = \"…\" on the field or the link",
                    unit.name
                ),
            );
        }
        if unit.owner == Owner::Both
            && link.policy_of(unit) == Policy::Newest
            && unit.clock.is_none()
        {
            push(
                Severity::Error,
                &unit.span,
                "newest-without-clock",
                format!(
                    "field `{}` uses `newest` but names no clock columns: every conflict would be held; add clock = {{ left = \"…\", right = \"…\" }}",
                    unit.name
                ),
            );
        }
    }
    // A field that flows to the left is read back through its map: the map must say
    // which left value each right value was.
    for unit in link.units.iter().filter(|u| u.owner != Owner::Left) {
        for &f in &unit.fields {
            let field = &link.fields[f];
            for (right, lefts) in field.meaning.collisions() {
                push(
                    Severity::Error,
                    &field.span,
                    "map-invertible",
                    format!(
                        "field `{}` flows to the left (owner {}) but its map sends {} all to {right}: a {right} coming back could be any of them; make the map one-to-one, or the field owner = \"left\"",
                        field.name,
                        unit.owner.as_str(),
                        lefts.join(", ")
                    ),
                );
            }
        }
    }
    for deleted_on in [Side::Left, Side::Right] {
        if link.delete_rule(deleted_on) == DeleteRule::Propagate && link.max_delete_fraction >= 1.0
        {
            push(
                Severity::Warning,
                &link.span,
                "delete-valve",
                "deletes propagate and max_delete_fraction = 1: nothing stops a mass delete".into(),
            );
        }
    }
}
