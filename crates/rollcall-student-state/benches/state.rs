//! State-update throughput and memory per student-year, on a realistic exception-only
//! feed: 180 instructional days, one enrollment per student (a tenth enter mid-year),
//! 10–15 absence/tardy events per student, Ed-Fi-shaped source keys and change versions.
//!
//! `cargo bench -p rollcall-student-state --bench state` prints the memory figures
//! first (a counting global allocator measures the heap the state holds), then the
//! Criterion throughput groups.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{Datelike, Days, NaiveDate, Weekday};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use rollcall_model::{AttendanceEvent, CalendarDay, Category, Enrollment, Operation};
use rollcall_policy::Policy;
use rollcall_student_state::RollupState;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A small deterministic generator (xorshift*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const STUDENTS_PER_SCHOOL: usize = 600;

#[derive(Clone, Copy, PartialEq)]
enum Versions {
    /// One global change version (Ed-Fi ODS), increasing through the year.
    EdFi,
    /// The CSV connector's `(file sequence << 32) | line`.
    Csv,
}

struct Feed {
    calendars: Vec<CalendarDay>,
    enrollments: Vec<Enrollment>,
    /// In date order, students interleaved (a daily feed).
    events: Vec<AttendanceEvent>,
    days: Vec<NaiveDate>,
}

fn instructional_days() -> Vec<NaiveDate> {
    let mut d = NaiveDate::from_ymd_opt(2023, 8, 21).unwrap();
    let mut out = Vec::new();
    let mut weekday = 0;
    while out.len() < 180 {
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            weekday += 1;
            if weekday % 23 != 0 {
                out.push(d);
            }
        }
        d = d + Days::new(1);
    }
    out
}

fn feed(students: usize, seed: u64, versions: Versions) -> Feed {
    let mut rng = Rng(seed | 1);
    let days = instructional_days();
    let schools = students.div_ceil(STUDENTS_PER_SCHOOL);
    let mut calendars = Vec::new();
    for s in 0..schools {
        let mut d = days[0];
        while d <= *days.last().unwrap() {
            calendars.push(CalendarDay {
                district_id: "255901".into(),
                school_id: format!("2559011{s:02}"),
                calendar_code: "2024-A".into(),
                school_year: 2024,
                date: d,
                is_instructional: days.binary_search(&d).is_ok(),
                events: vec![],
                operation: Operation::Upsert,
                source_version: 1,
                source_system: "edfi".into(),
                source_instance: "ods".into(),
                source_key: format!("cal|{s}|{d}"),
                observed_at_ms: 0,
            });
            d = d + Days::new(1);
        }
    }
    let mut enrollments = Vec::new();
    let mut raw: Vec<(usize, usize, Category, f64, usize)> = Vec::new(); // (day, student, cat, frac, school)
    for st in 0..students {
        let school = st / STUDENTS_PER_SCHOOL;
        let entry = if rng.below(10) == 0 {
            days[rng.below(90) as usize]
        } else {
            days[0]
        };
        enrollments.push(Enrollment {
            district_id: "255901".into(),
            school_id: format!("2559011{school:02}"),
            student_id: format!("{}", 604_000 + st),
            school_year: 2024,
            entry_date: entry,
            exit_date: None,
            grade_level: Some(["K", "01", "02", "03", "04", "05"][st % 6].into()),
            subgroups: if st % 5 == 0 {
                vec!["ell".into()]
            } else {
                vec![]
            },
            state_student_id: Some(format!("{}", 9_100_000_000u64 + st as u64)),
            operation: Operation::Upsert,
            source_version: 1 + st as i64,
            source_system: "edfi".into(),
            source_instance: "ods".into(),
            source_key: format!(
                "entryDate={entry}|schoolId=2559011{school:02}|studentUniqueId={}",
                604_000 + st
            ),
            observed_at_ms: 0,
            source_grade_level: None,
            exit_withdraw_type: None,
            source_exit_withdraw_type: None,
        });
        let first = days.iter().position(|d| *d >= entry).unwrap();
        let n = 10 + rng.below(6) as usize;
        for _ in 0..n {
            let day = first + rng.below((days.len() - first) as u64) as usize;
            let (cat, frac) = match rng.below(20) {
                0..=7 => (Category::UnexcusedAbsence, 1.0),
                8..=13 => (Category::ExcusedAbsence, 1.0),
                14 => (Category::ExcusedAbsence, 0.5),
                15 => (Category::UnexcusedAbsence, 0.33),
                16 => (Category::OutOfSchoolSuspension, 1.0),
                _ => (Category::Tardy, 0.0),
            };
            raw.push((day, st, cat, frac, school));
        }
    }
    raw.sort_by_key(|r| (r.0, r.1));
    let mut version: i64 = 1_000_000;
    let mut events = Vec::with_capacity(raw.len());
    let mut line = 0i64;
    let mut last_day = usize::MAX;
    for (day, st, cat, frac, school) in raw {
        if day != last_day {
            last_day = day;
            line = 0;
        }
        line += 1;
        let source_version = match versions {
            // the ODS also changes for other resources: a few versions per event
            Versions::EdFi => {
                version += 1 + rng.below(8) as i64;
                version
            }
            Versions::Csv => ((day as i64 + 1) << 32) | line,
        };
        let date = days[day];
        events.push(AttendanceEvent {
            district_id: "255901".into(),
            school_id: format!("2559011{school:02}"),
            student_id: format!("{}", 604_000 + st),
            school_year: 2024,
            date,
            category: cat,
            absent_fraction: frac,
            source_code: "uri://ed-fi.org/AttendanceEventCategoryDescriptor#Unexcused Absence"
                .into(),
            source_secondary_code: None,
            reason: None,
            source_system: "edfi".into(),
            source_instance: "ods".into(),
            source_key: format!(
                "attendanceEventCategoryDescriptor=uri://ed-fi.org/AttendanceEventCategoryDescriptor#{}|eventDate={date}|schoolId=2559011{school:02}|schoolYear=2024|sessionName=2023-2024 Fall Semester|studentUniqueId={}",
                cat.as_str(),
                604_000 + st
            ),
            source_version,
            operation: Operation::Upsert,
            observed_at_ms: 0,
        });
    }
    Feed {
        calendars,
        enrollments,
        events,
        days,
    }
}

fn loaded(f: &Feed, as_of: NaiveDate) -> RollupState {
    let mut st = RollupState::new(Policy::default(), as_of).unwrap();
    for c in &f.calendars {
        st.apply_calendar(c).unwrap();
    }
    for e in &f.enrollments {
        st.apply_enrollment(e).unwrap();
    }
    st.discard_dirty();
    st
}

fn memory_report() {
    for (versions, name) in [
        (Versions::EdFi, "Ed-Fi change versions"),
        (Versions::Csv, "CSV file<<32|line versions"),
    ] {
        let n = 100_000;
        let f = feed(n, 42, versions);
        let as_of = *f.days.last().unwrap();
        let mut st = RollupState::new(Policy::default(), as_of).unwrap();
        for c in &f.calendars {
            st.apply_calendar(c).unwrap();
        }
        st.discard_dirty();
        let before = LIVE.load(Ordering::Relaxed);
        for e in &f.enrollments {
            st.apply_enrollment(e).unwrap();
        }
        for e in &f.events {
            st.apply_attendance(e).unwrap();
        }
        st.discard_dirty();
        let after = LIVE.load(Ordering::Relaxed);
        let stats = st.stats();
        let census = st.census();
        println!(
            "memory ({name}): {n} students, {} events, {:.1} events/student: {:.1} bytes per student-year \
             (heap delta {} bytes; StateStats.student_bytes {:.1}/student; shared calendars+names {} bytes)",
            census.events,
            census.events as f64 / n as f64,
            (after - before) as f64 / n as f64,
            after - before,
            stats.student_bytes as f64 / n as f64,
            stats.shared_bytes,
        );
        black_box(&st);
    }
}

fn throughput(c: &mut Criterion) {
    let f = feed(20_000, 7, Versions::EdFi);
    let as_of = *f.days.last().unwrap();
    let n = f.events.len() as u64;

    let mut g = c.benchmark_group("state_update");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(n));
    // apply_attendance only: the state update per normalized event
    g.bench_function("apply_attendance", |b| {
        b.iter_batched(
            || loaded(&f, as_of),
            |mut st| {
                for e in &f.events {
                    black_box(st.apply_attendance(e).unwrap());
                }
                st
            },
            BatchSize::PerIteration,
        )
    });
    // the same stream, drained every 10,000 events into row diffs (every changed day
    // row and metrics row materialized): the rollup's whole in-process cost
    g.bench_function("apply_and_drain_every_10k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut st = loaded(&f, as_of);
                let t = Instant::now();
                let mut rows = 0usize;
                for chunk in f.events.chunks(10_000) {
                    for e in chunk {
                        st.apply_attendance(e).unwrap();
                    }
                    rows += st.drain_dirty().iter().map(|c| c.len()).sum::<usize>();
                }
                total += t.elapsed();
                black_box(rows);
            }
            total
        })
    });
    g.finish();

    // late corrections (unexcused → excused, same key, newer version) into a state that
    // already holds the whole year, drained every 10,000
    let mut corrections: Vec<AttendanceEvent> = f
        .events
        .iter()
        .filter(|e| e.category == Category::UnexcusedAbsence)
        .cloned()
        .collect();
    for (i, e) in corrections.iter_mut().enumerate() {
        e.category = Category::ExcusedAbsence;
        e.source_version = 10_000_000_000 + i as i64;
    }
    let mut g = c.benchmark_group("late_corrections");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(corrections.len() as u64));
    g.bench_function("correct_and_drain_every_10k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut st = loaded(&f, as_of);
                for e in &f.events {
                    st.apply_attendance(e).unwrap();
                }
                st.discard_dirty();
                let t = Instant::now();
                let mut rows = 0usize;
                for chunk in corrections.chunks(10_000) {
                    for e in chunk {
                        st.apply_attendance(e).unwrap();
                    }
                    rows += st.drain_dirty().iter().map(|c| c.len()).sum::<usize>();
                }
                total += t.elapsed();
                black_box(rows);
            }
            total
        })
    });
    g.finish();

    // a school day: as-of moves one instructional day, every enrolled student gets a
    // new day row and a metrics row
    let mut g = c.benchmark_group("as_of_advance");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(f.enrollments.len() as u64));
    let day_n = f.days[120];
    let day_n1 = f.days[121];
    g.bench_function("next_school_day_per_student", |b| {
        b.iter_batched(
            || {
                let mut st = loaded(&f, day_n);
                for e in &f.events {
                    st.apply_attendance(e).unwrap();
                }
                st.discard_dirty();
                st
            },
            |mut st| {
                st.set_as_of(day_n1).unwrap();
                let rows: usize = st.drain_dirty().iter().map(|c| c.len()).sum();
                black_box(rows);
                st
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, throughput);

fn main() {
    memory_report();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
