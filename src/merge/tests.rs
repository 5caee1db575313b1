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
