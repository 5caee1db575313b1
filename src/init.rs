//! `init`: look at two collections and propose a starting config — keys, the columns
//! both sides share, and a `match_on` candidate (a column unique on both sides).

use crate::config::{Secret, SystemSpec, substitute_env};
use crate::connectors::ColumnInfo;
use crate::connectors::{mysql, postgres, sqlite};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One side as typed on the command line: `KIND:LOCATION#COLLECTION`, for example
/// `sqlite:crm.db#contacts` or `postgres:${CRM_URL}#public.contacts`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub kind: String,
    /// As typed: a path, a URL, or `${ENV}` (kept unexpanded in the config).
    pub location: String,
    pub collection: String,
}

impl Target {
    /// # Errors
    /// The text is not `KIND:LOCATION#COLLECTION` with a known kind.
    pub fn parse(text: &str) -> Result<Target, String> {
        let usage = || {
            format!(
                "`{text}`: expected KIND:LOCATION#COLLECTION, e.g. sqlite:crm.db#contacts or postgres:${{CRM_URL}}#contacts"
            )
        };
        let (kind, rest) = text.split_once(':').ok_or_else(usage)?;
        let (location, collection) = rest.rsplit_once('#').ok_or_else(usage)?;
        if !["sqlite", "postgres", "mysql"].contains(&kind) {
            return Err(format!(
                "`{text}`: kind `{kind}` is not sqlite, postgres or mysql"
            ));
        }
        if location.is_empty() || collection.is_empty() {
            return Err(usage());
        }
        Ok(Target {
            kind: kind.into(),
            location: location.into(),
            collection: collection.into(),
        })
    }

    /// The system to connect to, with `${ENV}` expanded and paths relative to `dir`.
    ///
    /// # Errors
    /// A referenced environment variable is not set.
    pub fn system(&self, dir: &Path) -> Result<SystemSpec, String> {
        let location = substitute_env(&self.location, &|n| std::env::var(n).ok())?;
        Ok(match self.kind.as_str() {
            "sqlite" => SystemSpec::Sqlite(sqlite::Settings {
                path: dir.join(location),
            }),
            "postgres" => SystemSpec::Postgres(postgres::Settings {
                url: Secret::new(location),
            }),
            _ => SystemSpec::Mysql(mysql::Settings {
                url: Secret::new(location),
            }),
        })
    }

    fn system_toml(&self, name: &str) -> String {
        let key = if self.kind == "sqlite" { "path" } else { "url" };
        format!(
            "[systems.{name}]\nkind = \"{}\"\n{key} = {}\n",
            self.kind,
            toml_string(&self.location)
        )
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A column name as a TOML key: bare when it can be, quoted otherwise.
fn toml_key(name: &str) -> String {
    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        name.to_string()
    } else {
        toml_string(name)
    }
}

/// The key columns `init` proposes for a collection (empty: none found).
pub fn key_of(cols: &[ColumnInfo]) -> Vec<String> {
    key_columns(cols)
}

fn key_columns(cols: &[ColumnInfo]) -> Vec<String> {
    let pk: Vec<String> = cols
        .iter()
        .filter(|c| c.primary_key)
        .map(|c| c.name.clone())
        .collect();
    if !pk.is_empty() {
        return pk;
    }
    cols.iter()
        .find(|c| c.unique && c.not_null)
        .or_else(|| cols.iter().find(|c| c.name == "id"))
        .map(|c| vec![c.name.clone()])
        .unwrap_or_default()
}

/// The columns both sides have (same name, or the same ignoring case), keys aside, as
/// (left, right) names.
pub fn shared_columns(
    left_cols: &[ColumnInfo],
    right_cols: &[ColumnInfo],
) -> Vec<(String, String)> {
    shared(left_cols, right_cols)
        .into_iter()
        .map(|(l, r)| (l.name.clone(), r.name.clone()))
        .collect()
}

/// How often each value occurs in a column, when it holds few distinct values
/// ([`FEW_VALUES`] at most): what a value map would name.
pub type Picklist = BTreeMap<String, u64>;

/// Columns with more distinct values than this are no picklist.
pub const FEW_VALUES: usize = 20;

/// Reads `columns` of a collection and counts each one's values, giving up on a column
/// once it holds more than [`FEW_VALUES`] (`None`).
///
/// # Errors
/// A read that fails.
pub fn picklists(
    conn: &mut dyn crate::connectors::Connector,
    collection: &str,
    key: Vec<String>,
    columns: &[String],
) -> Result<Vec<Option<Picklist>>, crate::connectors::ConnectorError> {
    let spec = crate::connectors::ReadSpec {
        collection: collection.to_string(),
        key,
        columns: columns.to_vec(),
        since: None,
        range: None,
    };
    let mut lists: Vec<Option<Picklist>> = vec![Some(Picklist::new()); columns.len()];
    conn.scan(&spec, 5000, &mut |records| {
        for rec in records {
            for (list, v) in lists.iter_mut().zip(&rec.values) {
                let Some(l) = list else { continue };
                let text = match v {
                    crate::model::Value::Null => continue,
                    crate::model::Value::Text(t) => t.clone(),
                    other => other.to_string(),
                };
                *l.entry(text).or_default() += 1;
                if l.len() > FEW_VALUES {
                    *list = None;
                }
            }
        }
        Ok(())
    })?;
    Ok(lists)
}

/// A commented value-map suggestion for two columns that hold the same number of
/// distinct values under different names, paired by how often each occurs.
fn suggested_map(field: &str, left: &Picklist, right: &Picklist) -> Option<String> {
    if left.len() < 2 || left.len() != right.len() || left.keys().eq(right.keys()) {
        return None;
    }
    let by_count = |p: &Picklist| {
        let mut v: Vec<(&String, &u64)> = p.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.into_iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    };
    let pairs: Vec<String> = by_count(left)
        .iter()
        .zip(by_count(right))
        .map(|(l, r)| format!("{} = {}", toml_key(l), toml_string(&r)))
        .collect();
    let list = |p: &Picklist| p.keys().cloned().collect::<Vec<_>>().join(", ");
    Some(format!(
        "# `{field}`: the left holds {}, the right {} — as many values, named differently.\n\
         # If they mean the same, map them (paired here by how often each occurs: check every pair):\n\
         # {field} = {{ map = {{ {} }} }}\n",
        list(left),
        list(right),
        pairs.join(", ")
    ))
}

fn shared<'c>(
    left_cols: &'c [ColumnInfo],
    right_cols: &'c [ColumnInfo],
) -> Vec<(&'c ColumnInfo, &'c ColumnInfo)> {
    let left_key = key_columns(left_cols);
    let right_key = key_columns(right_cols);
    let mut shared: Vec<(&ColumnInfo, &ColumnInfo)> = Vec::new();
    for l in left_cols.iter().filter(|c| !left_key.contains(&c.name)) {
        let r = right_cols
            .iter()
            .filter(|c| !right_key.contains(&c.name))
            .find(|r| r.name == l.name)
            .or_else(|| {
                right_cols
                    .iter()
                    .filter(|c| !right_key.contains(&c.name))
                    .find(|r| r.name.eq_ignore_ascii_case(&l.name))
            });
        if let Some(r) = r {
            shared.push((l, r));
        }
    }
    shared
}

/// The proposed config, as TOML with comments saying what to decide. `picklists`: per
/// shared column (see [`shared_columns`]), its values on (left, right) where both are
/// few, to suggest value maps from.
pub fn propose(
    link: &str,
    left: &Target,
    left_cols: &[ColumnInfo],
    right: &Target,
    right_cols: &[ColumnInfo],
    picklists: &BTreeMap<String, (Picklist, Picklist)>,
) -> String {
    let left_key = key_columns(left_cols);
    let right_key = key_columns(right_cols);
    let shared = shared(left_cols, right_cols);
    let unique_both = shared.iter().filter(|(l, r)| l.unique && r.unique);
    let match_on = unique_both
        .clone()
        .find(|(l, _)| l.name.to_lowercase().contains("email"))
        .or_else(|| unique_both.clone().next())
        .map(|(l, _)| (l.name.clone(), true))
        .or_else(|| {
            shared
                .iter()
                .find(|(l, _)| l.name.to_lowercase().contains("email"))
                .map(|(l, _)| (l.name.clone(), false))
        });

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Proposed by `syncline init` from {}:{} and {}:{}.",
        left.kind, left.collection, right.kind, right.collection
    );
    let _ = writeln!(
        out,
        "# Review it, then `syncline check` and `syncline plan` before the first `syncline run`.\n"
    );
    out.push_str("[state]\npath = \".syncline/state.db\"\n\n");
    out.push_str(&left.system_toml("left_system"));
    out.push('\n');
    out.push_str(&right.system_toml("right_system"));
    out.push('\n');
    let _ = writeln!(out, "[links.{link}]");
    let _ = writeln!(
        out,
        "left = {}",
        toml_string(&format!("left_system.{}", left.collection))
    );
    let _ = writeln!(
        out,
        "right = {}",
        toml_string(&format!("right_system.{}", right.collection))
    );
    for (side, key) in [("left", &left_key), ("right", &right_key)] {
        if key.is_empty() {
            let _ = writeln!(
                out,
                "# {side}_key = \"…\"   # no primary key or unique NOT NULL column found: name the stable key"
            );
        } else {
            let _ = writeln!(out, "{side}_key = {}", toml_string(&key.join(", ")));
        }
    }
    out.push_str(
        "mode = \"one-way\"             # or \"two-way\"; then give every field an owner\n",
    );
    match &match_on {
        Some((m, true)) => {
            let _ = writeln!(
                out,
                "match_on = [{}]       # unique on both sides: pairs records that already exist on both",
                toml_string(m)
            );
        }
        Some((m, false)) => {
            let _ = writeln!(
                out,
                "match_on = [{}]       # NOT unique on both sides: duplicates will be quarantined",
                toml_string(m)
            );
        }
        None => {
            out.push_str("# match_on = [\"…\"]           # no column unique on both sides was found; without it (or right_ref, or a carried key),\n");
            out.push_str("#                               # records already on both sides cannot be paired\n");
        }
    }
    out.push_str(
        "on_delete = { left = \"hold\" }  # propagate | ignore | soft:COLUMN=VALUE | hold\n\n",
    );
    let _ = writeln!(out, "[links.{link}.fields]");
    // A receiving key the system does not fill itself must come from the left: carried,
    // the key is also how a create a crash left unknown is found again.
    let carry = !right_key.is_empty()
        && right_key.len() == left_key.len()
        && right_key
            .iter()
            .all(|k| right_cols.iter().any(|c| &c.name == k && !c.has_default));
    if carry {
        out.push_str(
            "# the right's key has no default of its own: it carries the left's key
",
        );
        for (l, r) in left_key.iter().zip(&right_key) {
            let name = toml_key(l);
            if l == r {
                let _ = writeln!(out, "{name} = {{}}");
            } else {
                let _ = writeln!(out, "{name} = {{ right = {} }}", toml_string(r));
            }
        }
    }
    if shared.is_empty() {
        out.push_str("# no column names in common: map them by hand, e.g. name = { right = \"full_name\" }\n");
    }
    for (l, r) in &shared {
        let mut parts = Vec::new();
        if l.name != r.name {
            parts.push(format!("right = {}", toml_string(&r.name)));
        }
        if match_on.as_ref().is_some_and(|(m, _)| m == &l.name)
            && l.declared_type.to_lowercase().contains("text")
        {
            parts.push("transform = \"trim+lowercase\"".into());
        }
        let name = toml_key(&l.name);
        if let Some(hint) = picklists
            .get(&l.name)
            .and_then(|(lp, rp)| suggested_map(&name, lp, rp))
        {
            out.push_str(&hint);
        }
        let _ = writeln!(
            out,
            "{name} = {{{}}}",
            if parts.is_empty() {
                String::new()
            } else {
                format!(" {} ", parts.join(", "))
            }
        );
    }
    out.push_str(&changes_hint(link, left_cols, right_cols));
    out
}

/// A column that looks like a change stamp (`updated_at`, `modified_at`, …).
fn change_stamp(cols: &[ColumnInfo]) -> Option<&str> {
    const NAMES: &[&str] = &[
        "updated_at",
        "modified_at",
        "changed_at",
        "last_modified",
        "updated",
        "modified",
        "row_version",
        "rowversion",
    ];
    NAMES.iter().find_map(|n| {
        cols.iter()
            .find(|c| c.name.eq_ignore_ascii_case(n))
            .map(|c| c.name.as_str())
    })
}

/// A commented `[changes]` block where a side has a change stamp: cycles that read
/// only what changed, for the person to turn on once they know every write sets it.
fn changes_hint(link: &str, left_cols: &[ColumnInfo], right_cols: &[ColumnInfo]) -> String {
    let stamps = [change_stamp(left_cols), change_stamp(right_cols)];
    if stamps.iter().all(Option::is_none) {
        return String::new();
    }
    let mut out = String::from(
        "\n# Cycles that read only what changed: if every insert and edit sets the column\n# below (a trigger, the application), uncomment (README: [links.NAME.changes]).\n",
    );
    let _ = writeln!(out, "# [links.{link}.changes]");
    for (side, stamp) in ["left", "right"].iter().zip(stamps) {
        if let Some(column) = stamp {
            let _ = writeln!(
                out,
                "# {side} = {{ cursor = {}, lookback = \"5s\" }}",
                toml_string(column)
            );
        }
    }
    out.push_str(
        "# full_every = 10                # every 10th cycle reads in full, which finds deletes\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, pk: bool, unique: bool) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            declared_type: "TEXT".into(),
            not_null: pk,
            primary_key: pk,
            unique: unique || pk,
            // Keys are assigned by the system here.
            has_default: pk,
        }
    }

    #[test]
    fn a_receiving_key_without_a_default_is_carried() {
        let l = Target::parse("postgres:${A}#orders").unwrap();
        let r = Target::parse("postgres:${B}#orders").unwrap();
        let mut key = col("order_id", true, false);
        key.has_default = false;
        let text = propose(
            "orders",
            &l,
            &[col("id", true, false), col("item", false, false)],
            &r,
            &[key, col("item", false, false)],
            &BTreeMap::new(),
        );
        assert!(text.contains("id = { right = \"order_id\" }"), "{text}");
        let text = propose(
            "orders",
            &l,
            &[col("id", true, false)],
            &r,
            &[col("id", true, false)],
            &BTreeMap::new(),
        );
        assert!(
            !text.contains("id = {"),
            "a key the right assigns is not carried: {text}"
        );
        toml::from_str::<toml::Value>(&text).expect("valid TOML");
    }

    #[test]
    fn targets_parse_and_name_what_is_wrong() {
        assert_eq!(
            Target::parse("postgres:${CRM_URL}#public.contacts").unwrap(),
            Target {
                kind: "postgres".into(),
                location: "${CRM_URL}".into(),
                collection: "public.contacts".into()
            }
        );
        assert!(Target::parse("oracle:x#t").unwrap_err().contains("oracle"));
        assert!(Target::parse("sqlite:crm.db").is_err());
    }

    #[test]
    fn a_change_stamp_is_offered_as_a_commented_cursor() {
        let target = |c: &str| Target {
            kind: "sqlite".into(),
            location: "x.db".into(),
            collection: c.into(),
        };
        let left = [
            col("id", true, false),
            col("name", false, false),
            col("Updated_At", false, false),
        ];
        let right = [col("id", true, false), col("name", false, false)];
        let toml = propose(
            "c",
            &target("a"),
            &left,
            &target("b"),
            &right,
            &BTreeMap::new(),
        );
        assert!(
            toml.contains(
                "# [links.c.changes]\n# left = { cursor = \"Updated_At\", lookback = \"5s\" }"
            ),
            "{toml}"
        );
        assert!(!toml.contains("# right = { cursor"), "{toml}");
        // Uncommented, it is a config that loads.
        let enabled = toml
            .replace("# [links.c.changes]", "[links.c.changes]")
            .replace("# left = {", "left = {");
        assert!(enabled.parse::<toml::Table>().is_ok(), "{enabled}");
        let plain = propose(
            "c",
            &target("a"),
            &right,
            &target("b"),
            &right,
            &BTreeMap::new(),
        );
        assert!(!plain.contains("changes"), "{plain}");
    }

    #[test]
    fn proposes_keys_shared_fields_and_a_unique_match_key() {
        let l = Target::parse("sqlite:crm.db#contacts").unwrap();
        let r = Target::parse("sqlite:billing.db#customers").unwrap();
        let text = propose(
            "contacts",
            &l,
            &[
                col("id", true, false),
                col("email", false, true),
                col("Name", false, false),
                col("only_left", false, false),
            ],
            &r,
            &[
                col("customer_id", true, false),
                col("email", false, true),
                col("name", false, false),
            ],
            &BTreeMap::new(),
        );
        assert!(text.contains("left_key = \"id\""), "{text}");
        assert!(text.contains("right_key = \"customer_id\""), "{text}");
        assert!(text.contains("match_on = [\"email\"]"), "{text}");
        assert!(text.contains("Name = { right = \"name\" }"), "{text}");
        assert!(!text.contains("only_left"), "{text}");
        toml::from_str::<toml::Value>(&text).expect("valid TOML");
    }
}
