use super::*;
use proptest::prelude::*;

fn rule(owner: Owner, policy: Policy) -> UnitRule {
    UnitRule {
        owner,
        policy,
        mode: Mode::TwoWay,
        on_drift: OnDrift::Correct,
    }
}

fn t(s: &str) -> Vec<Value> {
    vec![Value::Text(s.into())]
}

const NO_CLOCKS: Clocks = Clocks {
    left: None,
    right: None,
    skew_seconds: 2.0,
};

#[test]
fn a_value_equal_to_the_base_is_not_a_change() {
    // GIVEN both sides at the base WHEN deciding THEN nothing happens.
    let r = rule(Owner::Both, Policy::Manual);
    assert_eq!(
        decide(&r, &t("a"), &t("a"), Some(&t("a")), NO_CLOCKS),
        Decision::Unchanged
    );
    // GIVEN the right side still holds the base THEN the left change flows right, never back.
    assert_eq!(
        decide(&r, &t("b"), &t("a"), Some(&t("a")), NO_CLOCKS),
        Decision::Write {
            to: Side::Right,
            reason: Reason::Changed(Side::Left)
        }
    );
}

#[test]
fn both_changed_is_decided_by_policy() {
    let base = t("a");
    let cases = [
        (
            Policy::LeftWins,
            Decision::Write {
                to: Side::Right,
                reason: Reason::Policy(Policy::LeftWins),
            },
        ),
        (
            Policy::RightWins,
            Decision::Write {
                to: Side::Left,
                reason: Reason::Policy(Policy::RightWins),
            },
        ),
        (Policy::Manual, Decision::Conflict(ConflictCause::Manual)),
        (
            Policy::PreferNonEmpty,
            Decision::Conflict(ConflictCause::BothFilled),
        ),
        (Policy::Newest, Decision::Conflict(ConflictCause::NoClock)),
    ];
    for (policy, expected) in cases {
        assert_eq!(
            decide(
                &rule(Owner::Both, policy),
                &t("l"),
                &t("r"),
                Some(&base),
                NO_CLOCKS
            ),
            expected,
            "{policy:?}"
        );
    }
}

#[test]
fn newest_needs_clocks_beyond_the_skew() {
    let r = rule(Owner::Both, Policy::Newest);
    let clocks = |l, r| Clocks {
        left: Some(l),
        right: Some(r),
        skew_seconds: 2.0,
    };
    assert_eq!(
        decide(&r, &t("l"), &t("r"), Some(&t("a")), clocks(100.0, 90.0)),
        Decision::Write {
            to: Side::Right,
            reason: Reason::Policy(Policy::Newest)
        }
    );
    assert_eq!(
        decide(&r, &t("l"), &t("r"), Some(&t("a")), clocks(100.0, 99.0)),
        Decision::Conflict(ConflictCause::ClockTie)
    );
}

#[test]
fn prefer_non_empty_never_overwrites_a_filled_value_with_an_empty_one() {
    let r = rule(Owner::Both, Policy::PreferNonEmpty);
    assert_eq!(
        decide(&r, &[Value::Null], &t("r"), Some(&t("a")), NO_CLOCKS),
        Decision::Write {
            to: Side::Left,
            reason: Reason::Policy(Policy::PreferNonEmpty)
        }
    );
}

#[test]
fn drift_on_the_receiving_side_is_corrected_or_reported() {
    let mut r = rule(Owner::Left, Policy::Manual);
    r.mode = Mode::OneWay;
    assert_eq!(
        decide(&r, &t("a"), &t("x"), Some(&t("a")), NO_CLOCKS),
        Decision::Write {
            to: Side::Right,
            reason: Reason::DriftCorrection
        }
    );
    r.on_drift = OnDrift::Report;
    assert_eq!(
        decide(&r, &t("a"), &t("x"), Some(&t("a")), NO_CLOCKS),
        Decision::DriftReported { on: Side::Right }
    );
}

#[test]
fn clocks_are_read_from_common_forms() {
    assert_eq!(
        clock_seconds(&Value::Integer(1_700_000_000)),
        Some(1_700_000_000.0)
    );
    assert_eq!(
        clock_seconds(&Value::Integer(1_700_000_000_500)),
        Some(1_700_000_000.5)
    );
    assert_eq!(
        clock_seconds(&Value::Text("1970-01-01 00:01:00".into())),
        Some(60.0)
    );
    assert_eq!(
        clock_seconds(&Value::Text("1970-01-01T00:01:00+00:01".into())),
        Some(0.0)
    );
    assert_eq!(clock_seconds(&Value::Text("yesterday".into())), None);
}

fn small_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (0i64..3).prop_map(Value::Integer),
        prop::sample::select(vec!["", "a", "b"]).prop_map(|s| Value::Text(s.to_string())),
    ]
}

fn any_rule() -> impl Strategy<Value = UnitRule> {
    (
        prop::sample::select(vec![Owner::Left, Owner::Right, Owner::Both]),
        prop::sample::select(vec![
            Policy::LeftWins,
            Policy::RightWins,
            Policy::Newest,
            Policy::PreferNonEmpty,
            Policy::Manual,
        ]),
        prop::sample::select(vec![Mode::OneWay, Mode::TwoWay]),
        prop::sample::select(vec![OnDrift::Correct, OnDrift::Report]),
    )
        .prop_map(|(owner, policy, mode, on_drift)| UnitRule {
            owner,
            policy,
            mode,
            on_drift,
        })
}

fn mirror(side: Side) -> Side {
    side.other()
}

proptest! {
    /// Applying a decision makes both sides equal, and deciding again finds nothing to do:
    /// the merge converges in one step and is quiescent after it.
    #[test]
    fn applying_a_decision_converges_and_is_quiescent(
        rule in any_rule(), l in small_value(), r in small_value(),
        b in prop::option::of(small_value()), lc in prop::option::of(0f64..10.0), rc in prop::option::of(0f64..10.0),
    ) {
        let clocks = Clocks { left: lc, right: rc, skew_seconds: 2.0 };
        let (mut l, mut r) = (vec![l], vec![r]);
        let b = b.map(|v| vec![v]);
        let new_base = match decide(&rule, &l, &r, b.as_deref(), clocks) {
            Decision::Unchanged | Decision::Agreed => { prop_assert_eq!(&l, &r); l.clone() }
            Decision::Write { to: Side::Right, .. } => { r = l.clone(); l.clone() }
            Decision::Write { to: Side::Left, .. } => { l = r.clone(); r.clone() }
            Decision::DriftReported { .. } | Decision::Conflict(_) => return Ok(()),
        };
        prop_assert_eq!(decide(&rule, &l, &r, Some(&new_base), clocks), Decision::Unchanged);
    }

    /// An owned field is never written on its owner's side.
    #[test]
    fn owners_are_never_overwritten(rule in any_rule(), l in small_value(), r in small_value(), b in prop::option::of(small_value())) {
        let b = b.map(|v| vec![v]);
        if let Decision::Write { to, .. } = decide(&rule, &[l], &[r], b.as_deref(), NO_CLOCKS) {
            match rule.owner {
                Owner::Left => prop_assert_eq!(to, Side::Right),
                Owner::Right => prop_assert_eq!(to, Side::Left),
                Owner::Both => {}
            }
        }
    }

    /// A side still at the base is never the source of a write (echo suppression): only
    /// a changed side's value travels, except to restore an owner's value.
    #[test]
    fn unchanged_side_never_wins_against_a_changed_one(b in small_value(), r in small_value(), policy in prop::sample::select(vec![Policy::LeftWins, Policy::RightWins, Policy::Manual])) {
        let rule = UnitRule { owner: Owner::Both, policy, mode: Mode::TwoWay, on_drift: OnDrift::Correct };
        prop_assume!(r != b);
        let l = b.clone();
        let d = decide(&rule, std::slice::from_ref(&l), &[r], Some(&[b]), NO_CLOCKS);
        prop_assert_eq!(d, Decision::Write { to: Side::Left, reason: Reason::Changed(Side::Right) });
    }

    /// Swapping the sides (and mirroring the rule) mirrors the decision.
    #[test]
    fn decisions_are_symmetric(l in small_value(), r in small_value(), b in prop::option::of(small_value())) {
        let b = b.map(|v| vec![v]);
        let d = decide(&rule(Owner::Both, Policy::LeftWins), std::slice::from_ref(&l), std::slice::from_ref(&r), b.as_deref(), NO_CLOCKS);
        let m = decide(&rule(Owner::Both, Policy::RightWins), &[r], &[l], b.as_deref(), NO_CLOCKS);
        let mirrored = match d {
            Decision::Write { to, reason } => Decision::Write {
                to: mirror(to),
                reason: match reason {
                    Reason::Changed(s) => Reason::Changed(mirror(s)),
                    Reason::Policy(_) => Reason::Policy(Policy::RightWins),
                    other => other,
                },
            },
            other => other,
        };
        prop_assert_eq!(m, mirrored);
    }
}

/// A unit of one to three fields (a field group decides as one).
fn unit_values(n: usize) -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(small_value(), n)
}

fn mirror_rule(rule: UnitRule) -> UnitRule {
    UnitRule {
        owner: match rule.owner {
            Owner::Left => Owner::Right,
            Owner::Right => Owner::Left,
            Owner::Both => Owner::Both,
        },
        policy: match rule.policy {
            Policy::LeftWins => Policy::RightWins,
            Policy::RightWins => Policy::LeftWins,
            other => other,
        },
        ..rule
    }
}

fn mirror_decision(d: Decision) -> Decision {
    match d {
        Decision::Write { to, reason } => Decision::Write {
            to: mirror(to),
            reason: match reason {
                Reason::Changed(s) => Reason::Changed(mirror(s)),
                Reason::Policy(p) => Reason::Policy(mirror_rule(rule(Owner::Both, p)).policy),
                Reason::FirstLink(o) => {
                    Reason::FirstLink(mirror_rule(rule(o, Policy::Manual)).owner)
                }
                other => other,
            },
        },
        Decision::DriftReported { on } => Decision::DriftReported { on: mirror(on) },
        other => other,
    }
}

proptest! {
    /// Each side against its own base: a side still holding its own form of the agreed
    /// value (a trigger's, a rounding column's) has not changed, so with both sides so,
    /// nothing is written, whatever the two forms are — for groups too.
    #[test]
    fn sides_at_their_own_bases_write_nothing(
        rule in any_rule(),
        (bl, br) in (1usize..4).prop_flat_map(|n| (unit_values(n), unit_values(n))),
    ) {
        let d = decide_sides(&rule, &bl, &br, Some([&bl, &br]), NO_CLOCKS);
        prop_assert!(matches!(d, Decision::Unchanged | Decision::Agreed), "{:?}", d);
    }

    /// A side that changed against its own base is seen, however the other side holds
    /// the value: the change of one side always wins over a side at its base (owner
    /// `both`), for groups too.
    #[test]
    fn a_change_against_a_sides_own_base_is_seen(
        policy in prop::sample::select(vec![Policy::LeftWins, Policy::RightWins, Policy::Manual, Policy::Newest, Policy::PreferNonEmpty]),
        (bl, br, r) in (1usize..4).prop_flat_map(|n| (unit_values(n), unit_values(n), unit_values(n))),
    ) {
        prop_assume!(r != br && !same_meaning(&bl, &r));
        let d = decide_sides(&rule(Owner::Both, policy), &bl, &r, Some([&bl, &br]), NO_CLOCKS);
        prop_assert_eq!(d, Decision::Write { to: Side::Left, reason: Reason::Changed(Side::Right) });
    }

    /// Swapping the sides, their bases, owners, policies and clocks mirrors the decision,
    /// for every policy, owner, drift rule and group size.
    #[test]
    fn decisions_are_symmetric_for_every_rule(
        rule in any_rule(),
        (l, r, bl, br) in (1usize..4).prop_flat_map(|n| (unit_values(n), unit_values(n), unit_values(n), unit_values(n))),
        has_base: bool,
        lc in prop::option::of(0f64..10.0), rc in prop::option::of(0f64..10.0),
    ) {
        let clocks = Clocks { left: lc, right: rc, skew_seconds: 2.0 };
        let swapped = Clocks { left: rc, right: lc, skew_seconds: 2.0 };
        let base = has_base.then_some([bl.as_slice(), br.as_slice()]);
        let d = decide_sides(&rule, &l, &r, base, clocks);
        let m = decide_sides(&mirror_rule(rule), &r, &l, base.map(|[a, b]| [b, a]), swapped);
        prop_assert_eq!(m, mirror_decision(d));
    }
}
