//! Snapshot mode of the file-drop connector (`snapshots = true`), driven batch by batch
//! without Kafka: rows of the previous snapshot that the new one lacks become deletes,
//! only within the school years the new snapshot covers, and a restart from any
//! checkpoint (a fresh connector handed the last committed checkpoint, as after a crash)
//! publishes exactly what an uninterrupted run does.

use std::path::Path;

use rollcall_connector_csv::{CsvConfig, CsvConnector};
use rollcall_connector_kit::{Checkpoint, RawOperation, SisConnector};

fn connector(inbox: &Path) -> CsvConnector {
    let cfg: CsvConfig = serde_json::from_value(serde_json::json!({
        "district_id": "d1",
        "inbox": inbox,
        "preset": "generic",
        "snapshots": true,
        "rows_per_batch": 2,
        "settle_secs": 0,
    }))
    .unwrap();
    CsvConnector::new("snap", cfg).unwrap()
}

type Out = (String, RawOperation, i64);

/// Runs until caught up; with `restart_every`, a fresh connector resumes from the last
/// checkpoint after that many batches.
async fn drain(
    inbox: &Path,
    cp: &mut Option<Checkpoint>,
    restart_every: Option<usize>,
) -> Vec<Out> {
    let mut c = connector(inbox);
    let mut out = Vec::new();
    let mut n = 0;
    loop {
        let b = c.next_batch(cp.as_ref()).await.unwrap();
        for r in &b.records {
            out.push((
                r.envelope.natural_key.clone(),
                r.envelope.operation,
                r.envelope.source_version,
            ));
        }
        assert!(b.dead_letters.is_empty());
        c.committed(&b.checkpoint).await.unwrap();
        *cp = Some(b.checkpoint);
        if b.caught_up {
            return out;
        }
        n += 1;
        if restart_every.is_some_and(|k| n % k == 0) {
            c = connector(inbox);
        }
    }
}

fn write(inbox: &Path, name: &str, rows: &[&str]) {
    let mut text = String::from("school_id,student_id,date,code\n");
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(inbox.join(name), text).unwrap();
}

async fn scenario(restart_every: Option<usize>) -> Vec<Vec<Out>> {
    let inbox = tempfile::tempdir().unwrap();
    let p = inbox.path();
    let mut cp = None;
    let mut steps = Vec::new();
    write(
        p,
        "attendance_1.csv",
        &[
            "1,S1,2024-09-03,excused_absence",
            "1,S2,2024-09-03,unexcused_absence",
            "1,S3,2024-09-04,tardy",
            "1,S4,2024-09-05,unexcused_absence",
            "1,S5,2024-09-05,unexcused_absence",
        ],
    );
    steps.push(drain(p, &mut cp, restart_every).await);
    // S2 and S4 purged, S3 corrected, S6 new.
    write(
        p,
        "attendance_2.csv",
        &[
            "1,S1,2024-09-03,excused_absence",
            "1,S3,2024-09-04,excused_absence",
            "1,S5,2024-09-05,unexcused_absence",
            "1,S6,2024-09-06,tardy",
        ],
    );
    steps.push(drain(p, &mut cp, restart_every).await);
    // The next school year's first snapshot: last year's rows stay.
    write(p, "attendance_3.csv", &["1,S1,2025-09-02,tardy"]);
    steps.push(drain(p, &mut cp, restart_every).await);
    assert!(p.join("done/attendance_3.csv").exists());
    steps
}

#[tokio::test]
async fn rows_missing_from_the_next_snapshot_are_deleted_within_its_school_years() {
    let steps = scenario(None).await;
    let key = |s: &str, d: &str| format!("attendance:1|{s}|{d}");
    assert_eq!(steps[0].len(), 5);
    assert!(steps[0].iter().all(|o| o.1 == RawOperation::Upsert));
    let deletes: Vec<&Out> = steps[1]
        .iter()
        .filter(|o| o.1 == RawOperation::Delete)
        .collect();
    assert_eq!(
        deletes.iter().map(|o| o.0.clone()).collect::<Vec<_>>(),
        vec![key("S2", "2024-09-03"), key("S4", "2024-09-05")]
    );
    // Each delete outranks the row it deletes.
    for d in &deletes {
        let up = steps[0].iter().find(|o| o.0 == d.0).unwrap();
        assert!(d.2 > up.2);
    }
    assert_eq!(steps[1].len(), 4 + 2);
    assert_eq!(
        steps[2]
            .iter()
            .map(|o| (o.0.clone(), o.1))
            .collect::<Vec<_>>(),
        vec![(key("S1", "2025-09-02"), RawOperation::Upsert)],
        "a new school year deletes nothing of the last one"
    );
    // A later file's rows outrank every earlier one's (versions are the kit's: the
    // file's base from the clock when it was picked + the line).
    assert!(steps[1].iter().all(|o| steps[2][0].2 > o.2));
}

#[tokio::test]
async fn a_restart_after_every_batch_publishes_exactly_what_one_run_does() {
    let once = scenario(None).await;
    for k in [1, 2, 3] {
        assert_eq!(
            relative(scenario(Some(k)).await),
            relative(once.clone()),
            "restart every {k} batches"
        );
    }
}

/// Versions relative to the lowest of their step (one file each): a file's base comes
/// from the clock when it is picked, so two runs differ in bases, not in offsets.
fn relative(steps: Vec<Vec<Out>>) -> Vec<Vec<Out>> {
    steps
        .into_iter()
        .map(|step| {
            let low = step.iter().map(|o| o.2).min().unwrap_or(0);
            step.into_iter()
                .map(|(k, op, v)| (k, op, v - low))
                .collect()
        })
        .collect()
}
