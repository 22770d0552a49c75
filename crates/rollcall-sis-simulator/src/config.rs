//! What to simulate: the seed, the school year, the districts and the rates of the
//! awkward things real feeds do (corrections, deletes, duplicates, malformed records).

use serde::{Deserialize, Serialize};

/// Everything that decides a simulated world. Same config → byte-identical world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// The calendar year the school year ends in (2025 = the 2024-25 school year).
    pub school_year: i32,
    pub districts: Vec<DistrictSpec>,
    /// Extra malformed attendance records, as a share of real attendance events
    /// (0.001 = one per thousand). They are flagged so expected metrics exclude them.
    pub malformed_rate: f64,
    /// Share of attendance events re-sent unchanged later (Ed-Fi: a new change version
    /// with the same state; CSV: the row appears twice in a file).
    pub duplicate_rate: f64,
    /// Share of unexcused absences later corrected to excused (3–30 days later).
    pub late_correction_rate: f64,
    /// Share of initially enrolled students who never show and are purged later.
    pub no_show_rate: f64,
    /// Share of additional students entering mid-year (relative to initial enrollment).
    pub mid_year_entry_rate: f64,
    /// Share of students withdrawing mid-year.
    pub exit_rate: f64,
    /// Share of students transferring to another school of the same district.
    pub transfer_rate: f64,
    /// Multiplies every student's absence propensity (1.0 = calibrated default: about
    /// a fifth of students chronically absent by the end of the year).
    pub absence_scale: f64,
    /// Share of attendance events that become visible 1–6 days after their date.
    pub late_entry_rate: f64,
    /// Positive-attendance districts only: share of enrolled days with no record at all.
    pub missing_day_rate: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            school_year: 2025,
            districts: Vec::new(),
            malformed_rate: 0.0,
            duplicate_rate: 0.005,
            late_correction_rate: 0.12,
            no_show_rate: 0.01,
            mid_year_entry_rate: 0.05,
            exit_rate: 0.04,
            transfer_rate: 0.02,
            absence_scale: 1.0,
            late_entry_rate: 0.15,
            missing_day_rate: 0.002,
        }
    }
}

/// One district and how its SIS publishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistrictSpec {
    /// rollcall's district id (what connectors are configured with), e.g. "grand-bend".
    pub id: String,
    pub name: String,
    /// The numeric Ed-Fi LocalEducationAgency id; school ids are `lea_id * 1000 + n`.
    pub lea_id: u64,
    pub feed: Feed,
    pub schools: u32,
    /// Students enrolled at each school on the first day (mid-year entrants come on top).
    pub students_per_school: u32,
    /// The feed reports every day (present events too), not only exceptions.
    #[serde(default)]
    pub positive_attendance: bool,
    /// How an unexcused → excused correction appears in an Ed-Fi feed.
    #[serde(default)]
    pub corrections: CorrectionStyle,
}

/// How a district's SIS hands out its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feed {
    /// An Ed-Fi ODS/API (served by [`crate::edfi::serve`]).
    Edfi,
    /// CSV exports in one vendor's shape (written by [`crate::csv_export`]).
    Csv(CsvPreset),
}

/// The CSV export shapes the simulator writes; columns are documented in docs/simulator.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CsvPreset {
    PowerSchool,
    InfiniteCampus,
    Skyward,
    Aeries,
    Generic,
}

impl CsvPreset {
    pub const ALL: [CsvPreset; 5] = [
        CsvPreset::PowerSchool,
        CsvPreset::InfiniteCampus,
        CsvPreset::Skyward,
        CsvPreset::Aeries,
        CsvPreset::Generic,
    ];

    /// The stable snake_case name (as in configs and file names).
    pub fn as_str(self) -> &'static str {
        match self {
            CsvPreset::PowerSchool => "power_school",
            CsvPreset::InfiniteCampus => "infinite_campus",
            CsvPreset::Skyward => "skyward",
            CsvPreset::Aeries => "aeries",
            CsvPreset::Generic => "generic",
        }
    }
}

/// How an Ed-Fi SIS publishes an unexcused → excused correction (the category is part
/// of the attendance event's key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionStyle {
    /// The same resource (same `id`) changes key: a `keyChanges` entry plus the new state.
    #[default]
    KeyChange,
    /// The old resource is deleted and a new one (new `id`) created.
    DeleteCreate,
}

impl DistrictSpec {
    fn new(id: &str, name: &str, lea_id: u64, feed: Feed, schools: u32, students: u32) -> Self {
        DistrictSpec {
            id: id.to_string(),
            name: name.to_string(),
            lea_id,
            feed,
            schools,
            students_per_school: students,
            positive_attendance: false,
            corrections: CorrectionStyle::KeyChange,
        }
    }
}

impl SimConfig {
    /// For tests: 2 districts × 2 schools × 50 students, one Ed-Fi (key-change
    /// corrections) and one PowerSchool CSV; a few malformed records, and more no-shows
    /// than real life so every district has a purge.
    pub fn small(seed: u64) -> Self {
        SimConfig {
            seed,
            malformed_rate: 0.01,
            no_show_rate: 0.05,
            districts: vec![
                DistrictSpec::new("d-edfi", "Grand Bend ISD", 255901, Feed::Edfi, 2, 50),
                DistrictSpec::new(
                    "d-ps",
                    "Northridge USD",
                    255902,
                    Feed::Csv(CsvPreset::PowerSchool),
                    2,
                    50,
                ),
            ],
            ..SimConfig::default()
        }
    }

    /// The demo: about 20,000 students in seven districts — two Ed-Fi (one of them
    /// positive-attendance with delete+create corrections) and one per CSV preset.
    pub fn demo(seed: u64) -> Self {
        let mut districts = vec![
            DistrictSpec::new("grand-bend", "Grand Bend ISD", 255901, Feed::Edfi, 14, 500),
            DistrictSpec::new("lone-pine", "Lone Pine CISD", 255902, Feed::Edfi, 4, 400),
            DistrictSpec::new(
                "northridge",
                "Northridge Unified",
                255903,
                Feed::Csv(CsvPreset::PowerSchool),
                7,
                450,
            ),
            DistrictSpec::new(
                "cedar-falls",
                "Cedar Falls Public Schools",
                255904,
                Feed::Csv(CsvPreset::InfiniteCampus),
                6,
                420,
            ),
            DistrictSpec::new(
                "riverside",
                "Riverside County SD",
                255905,
                Feed::Csv(CsvPreset::Skyward),
                5,
                400,
            ),
            DistrictSpec::new(
                "san-benito",
                "San Benito Elementary",
                255906,
                Feed::Csv(CsvPreset::Aeries),
                4,
                380,
            ),
            DistrictSpec::new(
                "maple-grove",
                "Maple Grove Schools",
                255907,
                Feed::Csv(CsvPreset::Generic),
                3,
                350,
            ),
        ];
        districts[1].positive_attendance = true;
        districts[1].corrections = CorrectionStyle::DeleteCreate;
        SimConfig {
            seed,
            malformed_rate: 0.001,
            districts,
            ..SimConfig::default()
        }
    }

    /// Initially enrolled students over all districts.
    pub fn initial_students(&self) -> u64 {
        self.districts
            .iter()
            .map(|d| u64::from(d.schools) * u64::from(d.students_per_school))
            .sum()
    }

    /// Checks the config before generating; names the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1990..=2100).contains(&self.school_year) {
            return Err(ConfigError(format!(
                "school_year {} is out of range 1990..=2100",
                self.school_year
            )));
        }
        let rates = [
            ("malformed_rate", self.malformed_rate),
            ("duplicate_rate", self.duplicate_rate),
            ("late_correction_rate", self.late_correction_rate),
            ("no_show_rate", self.no_show_rate),
            ("mid_year_entry_rate", self.mid_year_entry_rate),
            ("exit_rate", self.exit_rate),
            ("transfer_rate", self.transfer_rate),
            ("late_entry_rate", self.late_entry_rate),
            ("missing_day_rate", self.missing_day_rate),
        ];
        for (name, v) in rates {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError(format!("{name} = {v} must be within 0..=1")));
            }
        }
        if !(0.0..=10.0).contains(&self.absence_scale) {
            return Err(ConfigError(format!(
                "absence_scale = {} must be within 0..=10",
                self.absence_scale
            )));
        }
        let mut ids = std::collections::HashSet::new();
        let mut leas = std::collections::HashSet::new();
        for d in &self.districts {
            if d.id.trim().is_empty() {
                return Err(ConfigError("a district has an empty id".into()));
            }
            if !ids.insert(d.id.as_str()) {
                return Err(ConfigError(format!("district id {:?} appears twice", d.id)));
            }
            if !leas.insert(d.lea_id) {
                return Err(ConfigError(format!(
                    "district {:?}: lea_id {} appears twice",
                    d.id, d.lea_id
                )));
            }
            if d.schools == 0 || d.schools > 999 {
                return Err(ConfigError(format!(
                    "district {:?}: schools = {} must be within 1..=999",
                    d.id, d.schools
                )));
            }
            if d.students_per_school > 100_000 {
                return Err(ConfigError(format!(
                    "district {:?}: students_per_school = {} is more than 100000",
                    d.id, d.students_per_school
                )));
            }
        }
        Ok(())
    }
}

/// A config that cannot be simulated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid simulator config: {0}")]
pub struct ConfigError(pub String);
