//! Offset paging over a host whose data changes while a window is read (the chaos test
//! found it: present days of a positive-attendance district lost for good). A record
//! changed or deleted after a window's `maxChangeVersion` leaves that window, so every
//! item behind it moves down one offset; a connector that only adds the page length
//! skips the item that moved under its offset, and nothing ever reads it again (it has
//! not changed). Here the simulated host's day moves on between batches; at the end the
//! records the connector published must leave exactly the host's current records live.
//! Pure: no Kafka (batches are taken from `next_batch` directly).

mod common;

use common::{current_keys, edfi_section, live_keys, secret_file, serve, two_district_world, Pub};
use rollcall_connector_edfi::{EdfiConfig, EdfiConnector};
use rollcall_connector_kit::{Checkpoint, RawRecord, SisConnector};
use rollcall_sis_simulator::edfi::ServerOptions;

const SERVED: [&str; 2] = ["d-kc", "d-dc"];

fn pub_of(r: &RawRecord) -> Pub {
    let e = &r.envelope;
    (
        e.entity.as_str().to_string(),
        format!("{:?}", e.operation),
        e.natural_key.clone(),
        e.old_natural_key.clone(),
        e.source_version,
        r.key.clone(),
        e.district_id.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_changed_while_a_window_is_read_do_not_make_the_pages_skip_others() {
    for seed in [11, 12, 13] {
        sync_while_the_host_moves(seed).await;
    }
}

async fn sync_while_the_host_moves(seed: u64) {
    let world = two_district_world(seed);
    let start = world.districts[0].first_instructional_day + chrono::Duration::days(60);
    let (base, handle) = serve(
        world.clone(),
        ServerOptions {
            start_day: Some(start),
            ..ServerOptions::default()
        },
    )
    .await;
    let secret = secret_file();
    // Small pages and batches, so that a window takes many batches and the host's day
    // (corrections, deletes, key changes of records already in the window) moves on
    // in the middle of it.
    let section = edfi_section(
        &world,
        &base,
        secret.path(),
        serde_json::json!({"page_size": 7, "records_per_batch": 7, "paging": "offset"}),
    );
    let cfg: EdfiConfig = serde_json::from_value(section).unwrap();
    let mut c = EdfiConnector::new("live", cfg, "rollcall-secret".into()).unwrap();

    let mut pubs: Vec<Pub> = Vec::new();
    let mut cp: Option<Checkpoint> = None;
    let mut batches = 0u32;
    // While the host moves: one school day every second batch, 200 days in all.
    let moving_batches = 400;
    loop {
        let b = c
            .next_batch(cp.as_ref())
            .await
            .unwrap_or_else(|e| panic!("batch {batches}: {e}"));
        batches += 1;
        pubs.extend(b.records.iter().map(pub_of));
        let caught_up = b.caught_up;
        cp = Some(b.checkpoint);
        if batches <= moving_batches {
            if batches.is_multiple_of(2) {
                handle.advance(1);
            }
        } else if caught_up {
            break;
        }
        assert!(batches < 50_000, "no end after {batches} batches");
    }
    eprintln!(
        "seed {seed}: {batches} batches, {} records, to day {}",
        pubs.len(),
        handle.day()
    );
    let want = current_keys(&world, &SERVED, handle.day());
    let got = live_keys(&pubs);
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "seed {seed}, after {batches} batches to day {}: {} of {} current records never live ({missing:?}…), \
         {} live that the host no longer has ({extra:?}…)",
        handle.day(),
        want.difference(&got).count(),
        want.len(),
        got.difference(&want).count(),
    );
}
