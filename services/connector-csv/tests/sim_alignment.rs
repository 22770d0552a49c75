//! The three independently written pieces agree (issue #5): every attendance, enrollment
//! and calendar row the SIS simulator exports for its demo year — each district in its
//! own CSV preset (PowerSchool, Infinite Campus, Skyward, Aeries, generic; the Ed-Fi
//! districts as generic) — goes through the file connector's own code (`RowReader` →
//! `to_record` → the Avro raw envelope) and the normalizer with the built-in code maps
//! plus `deploy/codemaps`, and comes out as the simulator's truth: same category, same
//! share of the day for absences, same enrollment dates (PowerSchool's exclusive exit
//! date included), same instructional days. Every row the simulator broke on purpose is
//! rejected — by the connector or by the normalizer — for the reason it was broken.
//! Pure: no Kafka.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::NaiveDate;
use rollcall_codemaps::CodeMapRegistry;
use rollcall_connector_csv::{preset, to_record, Encoding, RowError, RowReader};
use rollcall_connector_kit::Entity;
use rollcall_model::{Canonical, Category};
use rollcall_normalize::Normalizer;
use rollcall_policy::Policy;
use rollcall_sis_simulator::csv_export;
use rollcall_sis_simulator::model::{Fact, Malformation, Op};
use rollcall_sis_simulator::{generate, CsvPreset, SimConfig, World};

fn category(c: rollcall_sis_simulator::Category) -> Category {
    use rollcall_sis_simulator::Category as S;
    match c {
        S::Present => Category::Present,
        S::Tardy => Category::Tardy,
        S::EarlyDeparture => Category::EarlyDeparture,
        S::ExcusedAbsence => Category::ExcusedAbsence,
        S::UnexcusedAbsence => Category::UnexcusedAbsence,
        S::OutOfSchoolSuspension => Category::OutOfSchoolSuspension,
        S::InSchoolSuspension => Category::InSchoolSuspension,
    }
}

fn connector_preset(p: CsvPreset) -> &'static str {
    match p {
        CsvPreset::PowerSchool => "power_school",
        CsvPreset::InfiniteCampus => "infinite_campus",
        CsvPreset::Skyward => "skyward",
        CsvPreset::Aeries => "aeries",
        CsvPreset::Generic => "generic",
    }
}

pub fn codemaps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/codemaps")
}

fn normalizer() -> Normalizer {
    let mut maps = CodeMapRegistry::with_builtins();
    let n = maps
        .load_dir(codemaps_dir())
        .expect("deploy/codemaps loads");
    assert!(n >= 2, "deploy/codemaps holds the demo districts' maps");
    Normalizer::try_new(maps, Policy::default()).unwrap()
}

/// Why a row was refused: the connector's reason, or the normalizer's kind and reason.
#[derive(Debug)]
struct Refused {
    by_connector: bool,
    kind: String,
    reason: String,
}

impl Refused {
    /// Which malformation the refusal points at.
    fn malformation(&self) -> Option<Malformation> {
        let r = self.reason.as_str();
        if self.by_connector {
            if r.contains("is not a date") {
                Some(Malformation::BadDate)
            } else if r.starts_with("student_id ") {
                Some(Malformation::MissingStudent)
            } else if r.starts_with("code ") {
                // The code's own column is empty (Skyward `Category`, generic `category`).
                Some(Malformation::UnknownCode)
            } else {
                None
            }
        } else {
            match self.kind.as_str() {
                "invalid_date" => Some(Malformation::BadDate),
                "empty_identifier" | "missing_field" if r.contains("student") => {
                    Some(Malformation::MissingStudent)
                }
                "unknown_code" => Some(Malformation::UnknownCode),
                _ => None,
            }
        }
    }
}

/// Reads one exported file the way the connector does and normalizes every row.
fn ingest(
    n: &Normalizer,
    bytes: &[u8],
    preset_name: &str,
    entity: Entity,
    district: &str,
    today: NaiveDate,
) -> (Vec<Canonical>, Vec<Refused>) {
    let p = preset(preset_name).unwrap();
    let mut reader = RowReader::new(
        std::io::Cursor::new(bytes),
        b',',
        Encoding::Auto,
        p.columns(entity).clone(),
        p.date_formats,
        entity,
    )
    .unwrap_or_else(|e| panic!("{district} {preset_name} {entity:?}: {e}"));
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    while let Some(row) = reader.next_row() {
        match row {
            Ok(row) => {
                let version = row.line as i64;
                let rec = to_record(district, p.name, "csv:sim", entity, row, version);
                // Through the Avro contract, as on Kafka.
                let bytes = rollcall_avro::encode_raw(&rec.envelope);
                let env = rollcall_avro::decode_raw(&bytes).unwrap();
                match n.normalize_envelope(&env, today) {
                    Ok(out) => {
                        assert_eq!(out.len(), 1);
                        ok.extend(out);
                    }
                    Err(r) => refused.push(Refused {
                        by_connector: false,
                        kind: r.kind.as_str().to_string(),
                        reason: r.reason.clone(),
                    }),
                }
            }
            Err(RowError::Row { reason, .. }) => refused.push(Refused {
                by_connector: true,
                kind: "csv_row_invalid".into(),
                reason,
            }),
            Err(RowError::File(e)) => panic!("{district} {preset_name} {entity:?}: {e}"),
        }
    }
    (ok, refused)
}

/// What the simulator says one district's export holds at the end of `day`.
#[derive(Default)]
struct Truth {
    /// (school id, student number, date) → (category, absent milli-days), one per row
    /// (a re-sent duplicate is listed twice, as in the file).
    attendance: HashMap<(String, String, NaiveDate), Vec<(Category, u16)>>,
    malformed: HashMap<Malformation, usize>,
    /// (school id, student number, entry date) → inclusive exit date.
    enrollment: HashMap<(String, String, NaiveDate), Option<NaiveDate>>,
    /// (school id, date) → (instructional, Ed-Fi event name).
    calendar: HashMap<(String, NaiveDate), (bool, &'static str)>,
    /// School id → last instructional day of its visible calendar.
    last_day: HashMap<String, NaiveDate>,
}

fn truth(world: &World, district: &str, day: NaiveDate) -> Truth {
    let di = world.district_index(district).unwrap();
    let view = world.visible_through(day);
    let school = |s: u32| world.schools[s as usize].school_id.to_string();
    let student = |s: u32| world.students[s as usize].unique_id.clone();
    let mut t = Truth::default();
    for (idx, _, record, fact) in view.current() {
        if record.district != di {
            continue;
        }
        match fact {
            Fact::Attendance(a) => {
                // The export lists a re-sent unchanged state twice.
                let prev = world.log[idx].prev;
                let copies = if prev.is_some_and(|p| world.log[p as usize].op == Op::Upsert(*fact))
                {
                    2
                } else {
                    1
                };
                match record.malformed {
                    Some(m) => *t.malformed.entry(m).or_default() += copies,
                    None => t
                        .attendance
                        .entry((school(a.school), student(a.student), a.date))
                        .or_default()
                        .extend(std::iter::repeat_n(
                            (category(a.category), a.absent_milli),
                            copies,
                        )),
                }
            }
            Fact::Enrollment(e) => {
                t.enrollment.insert(
                    (school(e.school), student(e.student), e.entry_date),
                    e.exit_date,
                );
            }
            Fact::CalendarDate(c) => {
                t.calendar.insert(
                    (school(c.school), c.date),
                    (c.event.is_instructional(), c.event.edfi_name()),
                );
                if c.event.is_instructional() {
                    let last = t.last_day.entry(school(c.school)).or_insert(c.date);
                    *last = (*last).max(c.date);
                }
            }
        }
    }
    t
}

/// Checks one district's drop of `day`; returns (rows read, rows refused).
fn check_district(world: &World, n: &Normalizer, district: &str, day: NaiveDate) -> (usize, usize) {
    let sim_preset = csv_export::district_preset(world, district).unwrap();
    let p = connector_preset(sim_preset);
    let export = csv_export::render(world, district, sim_preset, day).unwrap();
    let mut t = truth(world, district, day);
    let year = world.config.school_year;
    let today = world.last_day;
    let ctx = format!("{district} ({p})");

    // Attendance: every good row is the truth; every refused row a malformed one.
    let (ok, refused) = ingest(
        n,
        &export.attendance,
        p,
        Entity::Attendance,
        district,
        today,
    );
    let mut rows = ok.len() + refused.len();
    for c in &ok {
        let Canonical::Attendance(e) = c else {
            panic!("{ctx}: not attendance: {c:?}")
        };
        assert_eq!(
            (e.district_id.as_str(), e.school_year),
            (district, year),
            "{ctx}"
        );
        let key = (e.school_id.clone(), e.student_id.clone(), e.date);
        let (cat, milli) = t
            .attendance
            .get_mut(&key)
            .and_then(Vec::pop)
            .unwrap_or_else(|| panic!("{ctx}: a row the simulator does not have: {e:?}"));
        assert_eq!(
            e.category, cat,
            "{ctx}: {key:?} code {:?} × {:?}",
            e.source_code, e.source_secondary_code
        );
        if matches!(
            cat,
            Category::ExcusedAbsence | Category::UnexcusedAbsence | Category::OutOfSchoolSuspension
        ) {
            assert_eq!(
                (e.absent_fraction * 1000.0).round() as u16,
                milli,
                "{ctx}: {key:?} share of the day"
            );
        }
    }
    let missing: Vec<_> = t.attendance.iter().filter(|(_, v)| !v.is_empty()).collect();
    assert!(
        missing.is_empty(),
        "{ctx}: rows lost: {:?}",
        &missing[..missing.len().min(5)]
    );
    let mut refused_by: HashMap<Malformation, usize> = HashMap::new();
    for r in &refused {
        let m = r
            .malformation()
            .unwrap_or_else(|| panic!("{ctx}: a good row was refused: {r:?}"));
        *refused_by.entry(m).or_default() += 1;
    }
    assert_eq!(
        refused_by, t.malformed,
        "{ctx}: refused rows = malformed rows, by kind"
    );

    // Enrollment: every row normalizes, with the inclusive exit date.
    let (ok, refused) = ingest(
        n,
        &export.enrollment,
        p,
        Entity::Enrollment,
        district,
        today,
    );
    rows += ok.len();
    assert!(
        refused.is_empty(),
        "{ctx}: enrollment refused: {:?}",
        &refused[..1]
    );
    assert_eq!(ok.len(), t.enrollment.len(), "{ctx}: enrollment rows");
    for c in &ok {
        let Canonical::Enrollment(e) = c else {
            panic!("{ctx}: not an enrollment: {c:?}")
        };
        assert_eq!(e.school_year, year, "{ctx}");
        // Every preset's grade spelling is mapped to an Ed-Fi code value.
        let grade = e
            .grade_level
            .as_deref()
            .unwrap_or_else(|| panic!("{ctx}: grade"));
        assert!(
            rollcall_model::GRADE_LEVELS.contains(&grade),
            "{ctx}: grade {grade:?} from {:?} is not canonical",
            e.source_grade_level
        );
        assert_ne!(
            e.exit_withdraw_type.as_deref(),
            Some("No show"),
            "{ctx}: the simulator's exit codes are district-defined, never mapped by a preset"
        );
        let key = (e.school_id.clone(), e.student_id.clone(), e.entry_date);
        let exit = t
            .enrollment
            .remove(&key)
            .unwrap_or_else(|| panic!("{ctx}: an enrollment the simulator does not have: {e:?}"));
        match (exit, sim_preset) {
            // PowerSchool always has an (exclusive) ExitDate: the day after the last
            // instructional day for students still enrolled.
            (None, CsvPreset::PowerSchool) => {
                assert_eq!(
                    e.exit_date,
                    Some(t.last_day[&e.school_id]),
                    "{ctx}: {key:?}"
                )
            }
            (exit, _) => assert_eq!(e.exit_date, exit, "{ctx}: {key:?} exit date"),
        }
    }

    // Calendar: every date, instructional or not, with its event.
    let (ok, refused) = ingest(n, &export.calendar, p, Entity::Calendar, district, today);
    rows += ok.len();
    assert!(
        refused.is_empty(),
        "{ctx}: calendar refused: {:?}",
        &refused[..1]
    );
    assert_eq!(ok.len(), t.calendar.len(), "{ctx}: calendar rows");
    for c in &ok {
        let Canonical::Calendar(d) = c else {
            panic!("{ctx}: not a calendar day: {c:?}")
        };
        assert_eq!(d.school_year, year, "{ctx}");
        let key = (d.school_id.clone(), d.date);
        let (instructional, event) = t
            .calendar
            .remove(&key)
            .unwrap_or_else(|| panic!("{ctx}: a calendar date the simulator does not have: {d:?}"));
        assert_eq!(d.is_instructional, instructional, "{ctx}: {key:?}");
        assert_eq!(d.events, vec![event.to_string()], "{ctx}: {key:?}");
    }
    (rows, refused_count(&refused_by))
}

fn refused_count(m: &HashMap<Malformation, usize>) -> usize {
    m.values().sum()
}

#[test]
fn every_row_of_every_demo_district_export_normalizes_to_the_simulators_truth() {
    let start = std::time::Instant::now();
    let world = generate(&SimConfig::demo(7)).unwrap();
    let n = normalizer();
    let mut presets_seen = std::collections::BTreeSet::new();
    let (mut rows, mut refused) = (0, 0);
    for d in &world.districts {
        let (r, x) = check_district(&world, &n, &d.spec.id, world.last_day);
        presets_seen.insert(connector_preset(
            csv_export::district_preset(&world, &d.spec.id).unwrap(),
        ));
        rows += r;
        refused += x;
    }
    assert_eq!(presets_seen.len(), 5, "every preset: {presets_seen:?}");
    assert!(rows > 500_000, "{rows} rows");
    assert!(refused > 10, "the demo year has malformed rows: {refused}");
    eprintln!(
        "{rows} rows, {refused} malformed ones refused, in {:?}",
        start.elapsed()
    );
}

#[test]
fn a_mid_year_drop_agrees_too() {
    // Mid-year: open enrollments (PowerSchool's exit date is then the last day of the
    // published calendar + 1), uncorrected absences, a district of each preset.
    let world = generate(&SimConfig::demo(11)).unwrap();
    let n = normalizer();
    for d in &world.districts {
        if matches!(d.spec.feed, rollcall_sis_simulator::Feed::Csv(_)) {
            let day = d.first_instructional_day + chrono::Duration::days(75);
            let (rows, _) = check_district(&world, &n, &d.spec.id, day);
            assert!(rows > 1000, "{}: {rows}", d.spec.id);
        }
    }
}
