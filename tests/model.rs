//! Model-based test of the DESIGN.md guarantees: a random link configuration (mode,
//! owners, conflict policies with clocks, a field group, transforms, delete rules,
//! delete-vs-edit, batch size) and a random sequence of what people do on both sides
//! (creates with colliding match keys, updates to NULL, empty, re-cased and repeated
//! values, reverts to the agreed value, the same edit on both sides, match-key edits,
//! deletes), interleaved with runs, some of which have an edit, a delete or a create made
//! between their plan and their apply.
//!
//! The model is a second, independent reading of the rules: it plans each run from what
//! both sides hold and what was last agreed, and predicts, for every run, every row on
//! both sides (every field, the external ids, no more and no fewer rows) and the run's
//! counts (creates, updates, deletes and stale skips per direction, conflicts held,
//! records quarantined). After the edits stop, one run converges and the next writes
//! nothing. Any difference between the model and syncline fails the test with the
//! sequence that shows it; proptest shrinks it and persists it as a regression.

mod support;

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use support::Fixture;
use syncline::engine::{RunOptions, RunReport};
use syncline::model::Value;

/// A column's value as people type it: NULL or text.
type V = Option<String>;

/// The link's fields, left column = right column; `email` is the match key.
const FIELDS: [&str; 4] = ["email", "name", "phone", "notes"];
const LEFT: usize = 0;
const RIGHT: usize = 1;
/// How far apart two clocks must be for `newest` to decide (`clock_skew_seconds`).
const SKEW: i64 = 1;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Owner {
    Left,
    Right,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    LeftWins,
    RightWins,
    PreferNonEmpty,
    Manual,
    Newest,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transform {
    None,
    Trim,
    Lowercase,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DeleteRule {
    Propagate,
    Ignore,
    Hold,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DeleteVsEdit {
    EditWins,
    DeleteWins,
    Hold,
}

#[derive(Debug, Clone)]
struct Cfg {
    two_way: bool,
    /// Per field of [`FIELDS`]: owner, policy (used when both own it), transform.
    fields: [(Owner, Policy, Transform); 4],
    /// `phone` and `notes` decided as one unit (they then share `phone`'s rules).
    grouped: bool,
    /// `[left, right]`: what a delete on that side does.
    on_delete: [DeleteRule; 2],
    delete_vs_edit: DeleteVsEdit,
    batch_size: usize,
}

impl Cfg {
    /// The units the merge decides, as field indexes.
    fn units(&self) -> Vec<Vec<usize>> {
        if self.grouped {
            vec![vec![0], vec![1], vec![2, 3]]
        } else {
            vec![vec![0], vec![1], vec![2], vec![3]]
        }
    }

    fn rule(&self, f: usize) -> (Owner, Policy) {
        let f = if self.grouped && f == 3 { 2 } else { f };
        (self.fields[f].0, self.fields[f].1)
    }

    fn transform(&self, f: usize) -> Transform {
        let f = if self.grouped && f == 3 { 2 } else { f };
        self.fields[f].2
    }

    fn toml(&self) -> String {
        let word = |p: Policy| match p {
            Policy::LeftWins => "left-wins",
            Policy::RightWins => "right-wins",
            Policy::PreferNonEmpty => "prefer-non-empty",
            Policy::Manual => "manual",
            Policy::Newest => "newest",
        };
        let rule = |r: DeleteRule| match r {
            DeleteRule::Propagate => "propagate",
            DeleteRule::Ignore => "ignore",
            DeleteRule::Hold => "hold",
        };
        let mut s = format!(
            r#"
[links.c]
left = "crm.contacts"
right = "billing.customers"
left_key = "id"
right_key = "cid"
mode = "{}"
match_on = ["email"]
left_ref = "bill_id"
right_ref = "crm_id"
clock = {{ left = "updated_at", right = "updated_at" }}
clock_skew_seconds = {SKEW}
on_delete = {{ left = "{}", right = "{}" }}
delete_vs_edit = "{}"
max_delete_fraction = 1.0
batch_size = {}

[links.c.fields]
"#,
            if self.two_way { "two-way" } else { "one-way" },
            rule(self.on_delete[LEFT]),
            rule(self.on_delete[RIGHT]),
            match self.delete_vs_edit {
                DeleteVsEdit::EditWins => "edit-wins",
                DeleteVsEdit::DeleteWins => "delete-wins",
                DeleteVsEdit::Hold => "hold",
            },
            self.batch_size
        );
        for (f, name) in FIELDS.iter().enumerate() {
            let (owner, policy) = self.rule(f);
            s += &format!(
                "{name} = {{ owner = \"{}\", conflict = \"{}\"",
                match owner {
                    Owner::Left => "left",
                    Owner::Right => "right",
                    Owner::Both => "both",
                },
                word(policy)
            );
            match self.transform(f) {
                Transform::None => {}
                Transform::Trim => s += ", transform = \"trim\"",
                Transform::Lowercase => s += ", transform = \"lowercase\"",
            }
            s += " }\n";
        }
        if self.grouped {
            s += "\n[links.c.groups]\ncontact = [\"phone\", \"notes\"]\n";
        }
        s
    }
}

fn cfg() -> impl Strategy<Value = Cfg> {
    let owner =
        prop_oneof![1 => Just(Owner::Left), 1 => Just(Owner::Right), 2 => Just(Owner::Both)];
    let policy = prop::sample::select(vec![
        Policy::LeftWins,
        Policy::RightWins,
        Policy::PreferNonEmpty,
        Policy::Manual,
        Policy::Newest,
    ]);
    let transform = prop::sample::select(vec![
        Transform::None,
        Transform::None,
        Transform::Trim,
        Transform::Lowercase,
    ]);
    let field = (owner, policy, transform);
    let rule = prop::sample::select(vec![
        DeleteRule::Propagate,
        DeleteRule::Propagate,
        DeleteRule::Ignore,
        DeleteRule::Hold,
    ]);
    let dve = prop::sample::select(vec![
        DeleteVsEdit::EditWins,
        DeleteVsEdit::DeleteWins,
        DeleteVsEdit::Hold,
    ]);
    (
        prop::bool::weighted(0.75),
        [field.clone(), field.clone(), field],
        any::<bool>(),
        [rule.clone(), rule],
        dve,
        1usize..5,
    )
        .prop_map(
            |(two_way, [name, phone, notes], grouped, on_delete, dve, batch)| {
                // The match key is the left's, lowercased (match_on normalizes anyway).
                let email = (Owner::Left, Policy::LeftWins, Transform::Lowercase);
                let mut fields = [email, name, phone, notes];
                if !two_way {
                    // A one-way link: the left owns every field.
                    for f in &mut fields {
                        f.0 = Owner::Left;
                    }
                }
                Cfg {
                    two_way,
                    fields,
                    grouped,
                    on_delete,
                    delete_vs_edit: dve,
                    batch_size: batch,
                }
            },
        )
}

// ---- what people do ------------------------------------------------------------------

/// What a person types into a field: NULL, empty, the same few values in several
/// spellings (so edits repeat, collide, and differ only in case or spaces), or a new one.
fn typed(v: u8, fresh: u32) -> V {
    match v % 9 {
        0 => None,
        1 => Some(String::new()),
        2 => Some("a".into()),
        3 => Some("A".into()),
        4 => Some(" a".into()),
        5 => Some("b".into()),
        _ => Some(format!("v{fresh}")),
    }
}

/// An email from a small pool, so that match keys collide; in any case, now and then
/// with a space, now and then empty (no match key).
fn email(v: u8) -> String {
    match v % 11 {
        10 => String::new(),
        n => {
            let e = format!("u{}@x.org", n % 4);
            match n / 4 {
                0 => e,
                1 => e.to_uppercase(),
                _ => format!(" {e}"),
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Insert {
        side: usize,
        email: u8,
        values: [u8; 3],
    },
    /// `field` 0 is the match key.
    Update {
        side: usize,
        pick: usize,
        field: usize,
        value: u8,
    },
    Delete {
        side: usize,
        pick: usize,
    },
}

#[derive(Debug, Clone)]
enum Op {
    Edit(Edit),
    /// A linked record's field set back to the value both sides last agreed on.
    Revert {
        side: usize,
        pick: usize,
        field: usize,
    },
    /// The same new value typed on both sides of a linked pair.
    EqualEdit {
        pick: usize,
        field: usize,
        value: u8,
    },
    Run,
    /// A run with this edit made between its plan and its apply.
    RunWithRace(Edit),
}

fn edit() -> impl Strategy<Value = Edit> {
    let side = 0usize..2;
    prop_oneof![
        3 => (side.clone(), any::<u8>(), any::<[u8; 3]>())
            .prop_map(|(side, email, values)| Edit::Insert { side, email, values }),
        6 => (side.clone(), any::<usize>(), prop_oneof![1 => Just(0usize), 6 => 1usize..4], any::<u8>())
            .prop_map(|(side, pick, field, value)| Edit::Update { side, pick, field, value }),
        1 => (side, any::<usize>()).prop_map(|(side, pick)| Edit::Delete { side, pick }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => edit().prop_map(Op::Edit),
        1 => (0usize..2, any::<usize>(), 1usize..4)
            .prop_map(|(side, pick, field)| Op::Revert { side, pick, field }),
        1 => (any::<usize>(), 1usize..4, any::<u8>())
            .prop_map(|(pick, field, value)| Op::EqualEdit { pick, field, value }),
        4 => Just(Op::Run),
        2 => edit().prop_map(Op::RunWithRace),
    ]
}

// ---- the model -----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Row {
    values: [V; 4],
    /// `updated_at`: when a person last edited the record (syncline never writes it).
    clock: Option<i64>,
    /// `bill_id` on the left, `crm_id` on the right: the partner's key, on records
    /// syncline created.
    reference: Option<i64>,
}

/// The last write of a unit, to count a value that keeps being changed back.
#[derive(Debug, Clone)]
struct Mark {
    to: usize,
    target: Vec<V>,
    replaced: Vec<V>,
    run: i64,
    bounces: u32,
}

#[derive(Debug, Clone)]
struct Pair {
    keys: [i64; 2],
    /// Per field, the value last agreed (normalized); `None` where nothing was agreed
    /// yet (a first link held as a conflict).
    base: [Option<V>; 4],
    /// Deleted on this side, and on_delete = ignore: the survivor is left alone.
    tombstone: Option<usize>,
    marks: BTreeMap<usize, Mark>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Counts {
    /// Per side written to.
    created: [u64; 2],
    updated: [u64; 2],
    deleted: [u64; 2],
    stale: [u64; 2],
    conflicts: u64,
    quarantined: u64,
}

impl Counts {
    fn of(report: &RunReport) -> Counts {
        let l = &report.links[0];
        let d = [&l.to_left, &l.to_right];
        Counts {
            created: d.map(|c| c.created),
            updated: d.map(|c| c.updated),
            deleted: d.map(|c| c.deleted),
            stale: d.map(|c| c.stale_skipped),
            conflicts: l.conflicts,
            quarantined: l.quarantined,
        }
    }
}

/// A write the model plans, applied unless the row it is conditional on changed.
#[derive(Debug)]
enum Write {
    Update {
        pair: usize,
        side: usize,
        set: Vec<(usize, V)>,
        /// Per unit written: the agreed value once the write lands, and its mark.
        settles: Vec<(usize, Vec<V>, Mark)>,
    },
    Delete {
        pair: usize,
        side: usize,
    },
    /// A new record on `to` from `from`'s row `key`; with `pair`, it replaces that
    /// pair's deleted record (delete_vs_edit = edit-wins).
    Create {
        from: usize,
        key: i64,
        pair: Option<usize>,
    },
}

struct Model {
    cfg: Cfg,
    rows: [BTreeMap<i64, Row>; 2],
    pairs: Vec<Pair>,
    /// Units frozen as flapping, by left key.
    frozen: BTreeSet<(i64, usize)>,
    run_seq: i64,
}

fn empty(v: &[V]) -> bool {
    v.iter()
        .all(|x| x.as_deref().is_none_or(|t| t.trim().is_empty()))
}

enum Decision {
    Unchanged,
    Agreed,
    Write(usize),
    Conflict,
}

impl Model {
    fn norm(&self, f: usize, v: &V) -> V {
        v.as_ref().map(|t| match self.cfg.transform(f) {
            Transform::None => t.clone(),
            Transform::Trim => t.trim().to_string(),
            Transform::Lowercase => t.to_lowercase(),
        })
    }

    fn unit_values(&self, unit: &[usize], row: &Row) -> Vec<V> {
        unit.iter().map(|&f| self.norm(f, &row.values[f])).collect()
    }

    fn match_key(&self, row: &Row) -> Option<String> {
        let e = self.norm(0, &row.values[0])?;
        let k = e.trim().to_lowercase();
        (!k.is_empty()).then_some(k)
    }

    fn decide(
        &self,
        unit: &[usize],
        lv: &[V],
        rv: &[V],
        base: Option<Vec<V>>,
        clocks: [Option<i64>; 2],
    ) -> Decision {
        if lv == rv {
            return if base.as_deref() == Some(lv) {
                Decision::Unchanged
            } else {
                Decision::Agreed
            };
        }
        let (owner, policy) = self.cfg.rule(unit[0]);
        let by_policy = || match policy {
            Policy::LeftWins => Decision::Write(RIGHT),
            Policy::RightWins => Decision::Write(LEFT),
            Policy::Manual => Decision::Conflict,
            Policy::PreferNonEmpty => match (empty(lv), empty(rv)) {
                (true, false) => Decision::Write(LEFT),
                (false, true) => Decision::Write(RIGHT),
                _ => Decision::Conflict,
            },
            Policy::Newest => match clocks {
                [Some(l), Some(r)] if (l - r).abs() > SKEW => {
                    Decision::Write(if l > r { RIGHT } else { LEFT })
                }
                _ => Decision::Conflict,
            },
        };
        let Some(base) = base else {
            return match owner {
                Owner::Left => Decision::Write(RIGHT),
                Owner::Right => Decision::Write(LEFT),
                Owner::Both => by_policy(),
            };
        };
        let changed = [lv != base.as_slice(), rv != base.as_slice()];
        match (owner, changed) {
            (_, [false, false]) => Decision::Unchanged,
            (Owner::Left, _) => Decision::Write(RIGHT),
            (Owner::Right, _) => Decision::Write(LEFT),
            (Owner::Both, [true, false]) => Decision::Write(RIGHT),
            (Owner::Both, [false, true]) => Decision::Write(LEFT),
            (Owner::Both, _) => by_policy(),
        }
    }

    fn unit_base(pair_base: &[Option<V>; 4], unit: &[usize]) -> Option<Vec<V>> {
        unit.iter().map(|&f| pair_base[f].clone()).collect()
    }

    /// Plans one pair whose records both exist; agreed values are recorded at once.
    fn plan_pair(&mut self, p: usize, counts: &mut Counts, writes: &mut Vec<Write>) {
        let keys = self.pairs[p].keys;
        let rows = [
            self.rows[LEFT][&keys[0]].clone(),
            self.rows[RIGHT][&keys[1]].clone(),
        ];
        let mut sets: [Vec<(usize, V)>; 2] = Default::default();
        let mut settles: [Vec<(usize, Vec<V>, Mark)>; 2] = Default::default();
        for (u, unit) in self.cfg.units().iter().enumerate() {
            if self.frozen.contains(&(keys[0], u)) {
                counts.quarantined += 1;
                continue;
            }
            let lv = self.unit_values(unit, &rows[LEFT]);
            let rv = self.unit_values(unit, &rows[RIGHT]);
            let base = Self::unit_base(&self.pairs[p].base, unit);
            let to = match self.decide(unit, &lv, &rv, base, [rows[0].clock, rows[1].clock]) {
                Decision::Unchanged => continue,
                Decision::Agreed => {
                    for (i, &f) in unit.iter().enumerate() {
                        self.pairs[p].base[f] = Some(lv[i].clone());
                    }
                    continue;
                }
                Decision::Conflict => {
                    counts.conflicts += 1;
                    continue;
                }
                Decision::Write(to) => to,
            };
            let (target, replaced) = if to == RIGHT { (lv, rv) } else { (rv, lv) };
            let bounces = match self.pairs[p].marks.get(&u) {
                Some(m)
                    if m.run == self.run_seq - 1
                        && ((m.to == to && m.target == target && m.replaced == replaced)
                            || (m.to != to && m.target == replaced && m.replaced == target)) =>
                {
                    m.bounces + 1
                }
                _ => 0,
            };
            if bounces >= 2 {
                self.frozen.insert((keys[0], u));
                counts.quarantined += 1;
                continue;
            }
            for (i, &f) in unit.iter().enumerate() {
                if rows[to].values[f] != target[i] {
                    sets[to].push((f, target[i].clone()));
                }
            }
            let mark = Mark {
                to,
                target: target.clone(),
                replaced,
                run: self.run_seq,
                bounces,
            };
            settles[to].push((u, target, mark));
        }
        for side in [LEFT, RIGHT] {
            if !sets[side].is_empty() {
                counts.updated[side] += 1;
                writes.push(Write::Update {
                    pair: p,
                    side,
                    set: std::mem::take(&mut sets[side]),
                    settles: std::mem::take(&mut settles[side]),
                });
            }
        }
    }

    /// Plans a pair whose record on `deleted_on` is gone.
    fn plan_deleted(
        &mut self,
        p: usize,
        deleted_on: usize,
        counts: &mut Counts,
        writes: &mut Vec<Write>,
    ) {
        let on = 1 - deleted_on;
        let survivor = &self.rows[on][&self.pairs[p].keys[on]];
        let edited = self.cfg.units().iter().any(|unit| {
            Some(self.unit_values(unit, survivor)) != Self::unit_base(&self.pairs[p].base, unit)
        });
        let rule = self.cfg.on_delete[deleted_on];
        if edited && rule != DeleteRule::Ignore {
            match self.cfg.delete_vs_edit {
                DeleteVsEdit::DeleteWins => {}
                DeleteVsEdit::EditWins => {
                    counts.created[deleted_on] += 1;
                    writes.push(Write::Create {
                        from: on,
                        key: self.pairs[p].keys[on],
                        pair: Some(p),
                    });
                    return;
                }
                DeleteVsEdit::Hold => {
                    counts.quarantined += 1;
                    return;
                }
            }
        }
        match rule {
            DeleteRule::Hold => counts.quarantined += 1,
            DeleteRule::Ignore => self.pairs[p].tombstone = Some(deleted_on),
            DeleteRule::Propagate => {
                counts.deleted[on] += 1;
                writes.push(Write::Delete { pair: p, side: on });
            }
        }
    }

    /// Plans a run from what both sides hold now; returns its writes and counts.
    fn plan(&mut self) -> (Vec<Write>, Counts, Vec<usize>) {
        self.run_seq += 1;
        let mut counts = Counts::default();
        let mut writes = Vec::new();
        let mut forget = Vec::new();
        for p in 0..self.pairs.len() {
            let keys = self.pairs[p].keys;
            let present = [
                self.rows[LEFT].contains_key(&keys[0]),
                self.rows[RIGHT].contains_key(&keys[1]),
            ];
            if let Some(t) = self.pairs[p].tombstone {
                if !present[1 - t] {
                    forget.push(p);
                }
                continue;
            }
            match present {
                [true, true] => self.plan_pair(p, &mut counts, &mut writes),
                [false, false] => forget.push(p),
                [true, false] => self.plan_deleted(p, RIGHT, &mut counts, &mut writes),
                [false, true] => self.plan_deleted(p, LEFT, &mut counts, &mut writes),
            }
        }
        // Records no pair holds: matched once by match key, ambiguous when a key is
        // shared by more than one record with both sides among them, created otherwise.
        let linked: [BTreeSet<i64>; 2] =
            [0, 1].map(|s| self.pairs.iter().map(|p| p.keys[s]).collect());
        let mut by_key: BTreeMap<String, [Vec<i64>; 2]> = BTreeMap::new();
        let mut creates = Vec::new();
        for side in [LEFT, RIGHT] {
            for (k, row) in &self.rows[side] {
                if linked[side].contains(k) {
                    continue;
                }
                match self.match_key(row) {
                    Some(m) => by_key.entry(m).or_default()[side].push(*k),
                    None => creates.push((side, *k)),
                }
            }
        }
        let mut matched = Vec::new();
        for [l, r] in by_key.into_values() {
            match (l.len(), r.len()) {
                (1, 1) => matched.push([l[0], r[0]]),
                (_, 0) => creates.extend(l.into_iter().map(|k| (LEFT, k))),
                (0, _) => creates.extend(r.into_iter().map(|k| (RIGHT, k))),
                (a, b) => counts.quarantined += (a + b) as u64,
            }
        }
        for keys in matched {
            self.pairs.push(Pair {
                keys,
                base: Default::default(),
                tombstone: None,
                marks: BTreeMap::new(),
            });
            let p = self.pairs.len() - 1;
            self.plan_pair(p, &mut counts, &mut writes);
        }
        for (from, key) in creates {
            if from == RIGHT && !self.cfg.two_way {
                continue;
            }
            counts.created[1 - from] += 1;
            writes.push(Write::Create {
                from,
                key,
                pair: None,
            });
        }
        (writes, counts, forget)
    }

    /// Applies the planned writes to the model, `before` being the rows as the plan read
    /// them: an update or delete of a row changed since is stale and not made. New rows'
    /// keys are learnt from `created` (the rows syncline made, found by their reference).
    fn apply(
        &mut self,
        writes: Vec<Write>,
        counts: &mut Counts,
        forget: Vec<usize>,
        before: &[BTreeMap<i64, Row>; 2],
        created: &[BTreeMap<i64, i64>; 2],
    ) {
        let changed = |side: usize, key: i64, now: &[BTreeMap<i64, Row>; 2]| match (
            before[side].get(&key),
            now[side].get(&key),
        ) {
            (Some(a), Some(b)) => a.values != b.values,
            _ => true,
        };
        let mut dropped = BTreeSet::from_iter(forget);
        for w in writes {
            match w {
                Write::Update {
                    pair,
                    side,
                    set,
                    settles,
                } => {
                    let key = self.pairs[pair].keys[side];
                    if changed(side, key, &self.rows) {
                        counts.updated[side] -= 1;
                        counts.stale[side] += 1;
                        continue;
                    }
                    let row = self.rows[side].get_mut(&key).unwrap();
                    for (f, v) in set {
                        row.values[f] = v;
                    }
                    let units = self.cfg.units();
                    for (u, target, mark) in settles {
                        for (i, &f) in units[u].iter().enumerate() {
                            self.pairs[pair].base[f] = Some(target[i].clone());
                        }
                        self.pairs[pair].marks.insert(u, mark);
                    }
                }
                Write::Delete { pair, side } => {
                    let key = self.pairs[pair].keys[side];
                    if changed(side, key, &self.rows) {
                        counts.deleted[side] -= 1;
                        counts.stale[side] += 1;
                        continue;
                    }
                    self.rows[side].remove(&key);
                    dropped.insert(pair);
                }
                Write::Create { from, key, pair } => {
                    let to = 1 - from;
                    let source = &before[from][&key];
                    let values: [V; 4] = std::array::from_fn(|f| self.norm(f, &source.values[f]));
                    let new_key = *created[to].get(&key).unwrap_or_else(|| {
                        panic!("syncline did not create {from}:{key} on side {to}")
                    });
                    self.rows[to].insert(
                        new_key,
                        Row {
                            values: values.clone(),
                            clock: None,
                            reference: Some(key),
                        },
                    );
                    let mut keys = [0; 2];
                    keys[from] = key;
                    keys[to] = new_key;
                    let fresh = Pair {
                        keys,
                        base: values.map(Some),
                        tombstone: None,
                        marks: BTreeMap::new(),
                    };
                    match pair {
                        Some(p) => self.pairs[p] = fresh,
                        None => self.pairs.push(fresh),
                    }
                }
            }
        }
        let mut p = 0;
        self.pairs.retain(|_| {
            p += 1;
            !dropped.contains(&(p - 1))
        });
    }

    fn linked_pairs(&self) -> Vec<usize> {
        (0..self.pairs.len())
            .filter(|&p| {
                let k = self.pairs[p].keys;
                self.pairs[p].tombstone.is_none()
                    && self.rows[LEFT].contains_key(&k[0])
                    && self.rows[RIGHT].contains_key(&k[1])
            })
            .collect()
    }
}

// ---- the world: real SQLite systems and the model side by side -----------------------

fn schema(side: usize) -> String {
    let (t, k, r) = table(side);
    format!(
        "CREATE TABLE {t} ({k} INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, name TEXT, phone TEXT, notes TEXT, updated_at INTEGER, {r} TEXT);"
    )
}

/// (table, key column, reference column) of a side.
fn table(side: usize) -> (&'static str, &'static str, &'static str) {
    if side == LEFT {
        ("contacts", "id", "bill_id")
    } else {
        ("customers", "cid", "crm_id")
    }
}

struct World {
    f: Fixture,
    model: Model,
    /// Strictly increasing: every edit's clock, and every new value's suffix.
    tick: u32,
}

fn text(v: &V) -> rusqlite::types::Value {
    match v {
        Some(t) => rusqlite::types::Value::Text(t.clone()),
        None => rusqlite::types::Value::Null,
    }
}

impl World {
    fn new(cfg: Cfg) -> World {
        World {
            f: Fixture::new(&schema(LEFT), &schema(RIGHT), &cfg.toml()),
            model: Model {
                cfg,
                rows: Default::default(),
                pairs: Vec::new(),
                frozen: BTreeSet::new(),
                run_seq: 0,
            },
            tick: 0,
        }
    }

    fn next_tick(&mut self) -> u32 {
        self.tick += 10;
        self.tick
    }

    /// Makes one edit on a side's database (through `conn`) and in the model.
    fn edit(model: &mut Model, conn: &rusqlite::Connection, e: &Edit, tick: u32) {
        let side = match e {
            Edit::Insert { side, .. } | Edit::Update { side, .. } | Edit::Delete { side, .. } => {
                *side
            }
        };
        let (t, k, _) = table(side);
        let keys: Vec<i64> = model.rows[side].keys().copied().collect();
        match *e {
            Edit::Insert {
                email: em, values, ..
            } => {
                let values = [
                    Some(email(em)),
                    typed(values[0], tick),
                    typed(values[1], tick + 1),
                    typed(values[2], tick + 2),
                ];
                conn.execute(
                    &format!("INSERT INTO {t} (email, name, phone, notes, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)"),
                    rusqlite::params![text(&values[0]), text(&values[1]), text(&values[2]), text(&values[3]), tick],
                )
                .unwrap();
                model.rows[side].insert(
                    conn.last_insert_rowid(),
                    Row {
                        values,
                        clock: Some(i64::from(tick)),
                        reference: None,
                    },
                );
            }
            Edit::Update {
                pick, field, value, ..
            } => {
                if keys.is_empty() {
                    return;
                }
                let key = keys[pick % keys.len()];
                // The match key is NOT NULL: an edit to it is another email.
                let v = if field == 0 {
                    Some(email(value))
                } else {
                    typed(value, tick)
                };
                Self::set(model, conn, side, key, field, v, tick);
            }
            Edit::Delete { pick, .. } => {
                if keys.is_empty() {
                    return;
                }
                let key = keys[pick % keys.len()];
                conn.execute(&format!("DELETE FROM {t} WHERE {k} = ?1"), [key])
                    .unwrap();
                model.rows[side].remove(&key);
            }
        }
    }

    fn set(
        model: &mut Model,
        conn: &rusqlite::Connection,
        side: usize,
        key: i64,
        field: usize,
        v: V,
        tick: u32,
    ) {
        let (t, k, _) = table(side);
        conn.execute(
            &format!(
                "UPDATE {t} SET {} = ?1, updated_at = ?2 WHERE {k} = ?3",
                FIELDS[field]
            ),
            rusqlite::params![text(&v), tick, key],
        )
        .unwrap();
        let row = model.rows[side].get_mut(&key).unwrap();
        row.values[field] = v;
        row.clock = Some(i64::from(tick));
    }

    /// Every row of a side as the model writes it down.
    fn read(&self, side: usize) -> BTreeMap<i64, Row> {
        let (t, k, r) = table(side);
        Fixture::rows(
            conn(&self.f, side),
            &format!("SELECT {k}, email, name, phone, notes, updated_at, {r} FROM {t}"),
        )
        .into_iter()
        .map(|row| {
            let v = |x: &Value| match x {
                Value::Null => None,
                Value::Text(t) => Some(t.clone()),
                other => panic!("unexpected {other:?}"),
            };
            let int = |x: &Value| match x {
                Value::Null => None,
                Value::Integer(i) => Some(*i),
                Value::Text(t) => Some(t.parse().unwrap()),
                other => panic!("unexpected {other:?}"),
            };
            (
                int(&row[0]).unwrap(),
                Row {
                    values: [v(&row[1]), v(&row[2]), v(&row[3]), v(&row[4])],
                    clock: int(&row[5]),
                    reference: int(&row[6]),
                },
            )
        })
        .collect()
    }

    /// A run (with `race` made between its plan and its apply), in syncline and in the
    /// model; asserts the model's prediction of every row and of the run's counts.
    fn run(&mut self, race: Option<Edit>) -> Result<RunReport, TestCaseError> {
        // A first load streams (plan and apply interleave batch by batch): an edit
        // "between plan and apply" has no single moment there, so it is made before.
        let first_load = self.model.pairs.is_empty() && self.model.rows[RIGHT].is_empty();
        let race = match race {
            Some(e) if first_load => {
                let tick = self.next_tick();
                Self::edit(&mut self.model, conn(&self.f, edit_side(&e)), &e, tick);
                None
            }
            race => race,
        };
        let before = self.model.rows.clone();
        let (writes, mut counts, forget) = self.model.plan();
        let report = match &race {
            None => self.f.run(),
            Some(e) => {
                let tick = self.next_tick();
                let path = self.f.path().join(if edit_side(e) == LEFT {
                    "left.db"
                } else {
                    "right.db"
                });
                let model = &mut self.model;
                let mut hook = |_: &str| {
                    let c = rusqlite::Connection::open(&path).unwrap();
                    Self::edit(model, &c, e, tick);
                };
                self.f.run_with(RunOptions {
                    between_plan_and_apply: Some(&mut hook),
                    ..Default::default()
                })
            }
        };
        // The rows syncline created, by the key they refer to.
        let now = [self.read(LEFT), self.read(RIGHT)];
        let created: [BTreeMap<i64, i64>; 2] = [0, 1].map(|s| {
            now[s]
                .iter()
                .filter(|(k, r)| r.reference.is_some() && !self.model.rows[s].contains_key(k))
                .map(|(k, r)| (r.reference.unwrap(), *k))
                .collect()
        });
        self.model
            .apply(writes, &mut counts, forget, &before, &created);
        for side in [LEFT, RIGHT] {
            prop_assert_eq!(
                &now[side],
                &self.model.rows[side],
                "side {} differs from the model after run {} (race {:?}); pairs {:?}",
                side,
                self.model.run_seq,
                race,
                self.model.pairs
            );
        }
        prop_assert_eq!(
            Counts::of(&report),
            counts,
            "run {} counts differ from the model (race {:?}): {:?}",
            self.model.run_seq,
            race,
            report.links[0].planned
        );
        Ok(report)
    }
}

fn conn(f: &Fixture, side: usize) -> &rusqlite::Connection {
    if side == LEFT { &f.left } else { &f.right }
}

fn edit_side(e: &Edit) -> usize {
    match e {
        Edit::Insert { side, .. } | Edit::Update { side, .. } | Edit::Delete { side, .. } => *side,
    }
}

fn play(cfg: Cfg, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut w = World::new(cfg);
    for op in ops {
        match op {
            Op::Edit(e) => {
                let tick = w.next_tick();
                World::edit(&mut w.model, conn(&w.f, edit_side(&e)), &e, tick);
            }
            Op::Revert { side, pick, field } => {
                let linked = w.model.linked_pairs();
                if linked.is_empty() {
                    continue;
                }
                let pair = &w.model.pairs[linked[pick % linked.len()]];
                let Some(agreed) = pair.base[field].clone() else {
                    continue;
                };
                let key = pair.keys[side];
                let tick = w.next_tick();
                World::set(
                    &mut w.model,
                    conn(&w.f, side),
                    side,
                    key,
                    field,
                    agreed,
                    tick,
                );
            }
            Op::EqualEdit { pick, field, value } => {
                let linked = w.model.linked_pairs();
                if linked.is_empty() {
                    continue;
                }
                let keys = w.model.pairs[linked[pick % linked.len()]].keys;
                let tick = w.next_tick();
                let v = typed(value, tick);
                for side in [LEFT, RIGHT] {
                    let tick = w.next_tick();
                    World::set(
                        &mut w.model,
                        conn(&w.f, side),
                        side,
                        keys[side],
                        field,
                        v.clone(),
                        tick,
                    );
                }
            }
            Op::Run => {
                w.run(None)?;
            }
            Op::RunWithRace(e) => {
                w.run(Some(e))?;
            }
        }
    }
    // Edits stop: one run settles what the last edits started; from then on nothing is
    // written (the model predicts the same, and says what is left for a person).
    w.run(None)?;
    for n in 1..=2 {
        let report = w.run(None)?;
        prop_assert_eq!(
            support::writes(&report),
            0,
            "run {} after edits stopped wrote: {:?}",
            n,
            report.links[0].planned
        );
    }
    Ok(())
}

/// `PROPTEST_CASES`, or 256 sequences: a few hundred in every CI run; the long run is
/// `PROPTEST_CASES=10000 cargo test --release --test model`.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn syncline_does_what_the_model_of_its_rules_says(
        cfg in cfg(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        play(cfg, ops)?;
    }
}
