use chrono::{Datelike, Weekday};
use rollcall_sis_simulator::*;

#[test]
fn demo_stats() {
    let t = std::time::Instant::now();
    let world = generate(&SimConfig::demo(7)).unwrap();
    eprintln!("generated in {:?}: {:?}", t.elapsed(), world.summary());
    let t = std::time::Instant::now();
    let e = expected_metrics(&world, world.last_day);
    eprintln!("expected in {:?}: {:?}", t.elapsed(), e.state);
    let mut by_dow = [0u64; 7];
    let mut by_month = [0u64; 13];
    for (_, _, _, f) in world.final_view().current() {
        if let Fact::Attendance(a) = f {
            if a.category.counts_absent() {
                by_dow[a.date.weekday().num_days_from_monday() as usize] += 1;
                by_month[a.date.month() as usize] += 1;
            }
        }
    }
    eprintln!("{by_dow:?} {by_month:?}");
    let _ = Weekday::Mon;
}
