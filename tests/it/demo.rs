//! `duehook demo --fast` runs to completion as a newcomer would run it: the real binary,
//! its own temp store, manual clock and receiver. It exits 0, and its summary shows as
//! many webhooks received (each signature verified, none twice) as the rules call for.

use std::process::Command;
use std::time::{Duration, Instant};

/// The numbers of the summary line
/// "expected per the rules: N, received: N, signatures verified: N, duplicates: N".
fn totals(out: &str) -> [usize; 4] {
    let line = out
        .lines()
        .find(|l| l.starts_with("expected per the rules:"))
        .unwrap_or_else(|| panic!("no summary line in:\n{out}"));
    let n: Vec<usize> = line
        .split(',')
        .map(|part| {
            part.rsplit(':')
                .next()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("not a count in {part:?}"))
        })
        .collect();
    n.try_into().expect("four counts")
}

/// (expected, received) of one event type in the summary table.
fn row(out: &str, event_type: &str) -> (usize, usize) {
    out.lines()
        .find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            match cols.as_slice() {
                [ty, e, r, ..] if *ty == event_type => Some((e.parse().ok()?, r.parse().ok()?)),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("no summary row for {event_type} in:\n{out}"))
}

#[test]
fn the_demo_lives_through_three_days_and_everything_adds_up() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_duehook"))
        .args(["demo", "--fast"])
        .env_remove("RUST_LOG")
        .output()
        .expect("duehook demo runs");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit status {:?}\nstdout:\n{out}\nstderr:\n{err}",
        output.status
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );

    let [expected, received, verified, duplicates] = totals(&out);
    assert!(expected > 0, "{out}");
    assert_eq!(received, expected, "{out}");
    assert_eq!(verified, received, "{out}");
    assert_eq!(duplicates, 0, "{out}");
    assert!(out.contains("result: OK"), "{out}");

    // One line per webhook: time, type, entity, verified.
    let webhook = |ty: &str, id: &str| {
        out.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() >= 6 && cols[3] == ty && cols[4] == id && l.contains("signature ok")
        })
    };
    assert!(webhook("order.overdue_1_hour", "ord-1"), "{out}");
    assert!(webhook("unitRental.markOverdue", "unit-a12"), "{out}");
    assert!(webhook("unitRental.unmarkOverdue", "unit-a12"), "{out}");
    assert!(webhook("item.expire", "lens-9"), "{out}");
    assert!(webhook("reservation.cancel", "res-2"), "{out}");
    // Returned before it was a day late; the on-time order is never overdue.
    assert!(!webhook("order.overdue_1_day", "ord-1"), "{out}");
    assert!(!webhook("order.overdue_1_hour", "ord-2"), "{out}");

    assert_eq!(row(&out, "order.checkin"), (3, 3), "{out}");
    assert_eq!(row(&out, "order.overdue_1_hour"), (1, 1), "{out}");
    assert!(
        out.contains(&format!(
            "timers fired (GET /admin/schedule): {0}, time-based events expected: {0}",
            row(&out, "order.due_in_1_day").0
                + row(&out, "order.due_in_1_hour").0
                + row(&out, "order.overdue_1_hour").0
                + row(&out, "reservation.due_in_1_hour").0
                + row(&out, "reservation.overdue_1_hour").0
                + row(&out, "reservation.overdue_1_day").0
                + row(&out, "unitRental.markOverdue").0
                + row(&out, "item.expire").0
        )),
        "{out}"
    );
}

#[test]
fn the_demo_refuses_nonsense_options() {
    let output = Command::new(env!("CARGO_BIN_EXE_duehook"))
        .args(["demo", "--fast", "--days", "0"])
        .output()
        .expect("duehook demo runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--days must be 1 to 14"));
}
