-- The rollup's tables: one row per student per enrolled instructional day, and one row
-- of metrics per student per school and school year. Both are versioned upserts
-- (ReplacingMergeTree keeps the row with the highest `version` for a key); a row that
-- must disappear is written again with deleted = 1. Read them through the views of
-- 0002, which hide superseded and deleted rows.
--
-- Day amounts are integer thousandths of a day ("milli-days": 1000 = a full day,
-- 500 = a half day) so that sums are exact in Rust and in SQL alike.
-- Must run on ClickHouse 18.16 and on current releases: no LowCardinality, no
-- DateTime64, no window functions.

CREATE TABLE IF NOT EXISTS ${database}.student_days (
    school_year      UInt16,
    district_id      String,
    school_id        String,
    student_id       String,
    date             Date,
    -- the day's final status after precedence; 'no_event' = no record (present in an
    -- exception-only feed); 'missing' = no record in a positive-attendance feed
    status           Enum8('present' = 1, 'tardy' = 2, 'early_departure' = 3,
                           'excused_absence' = 4, 'unexcused_absence' = 5,
                           'out_of_school_suspension' = 6, 'in_school_suspension' = 7,
                           'not_enrolled' = 8, 'no_event' = 9, 'missing' = 10),
    -- 1 when the day counts in the denominator (enrolled instructional day)
    enrolled         UInt8,
    -- what the day counts as absent under the policy, and its parts
    absent_milli     UInt16,
    excused_milli    UInt16,
    unexcused_milli  UInt16,
    suspended_milli  UInt16,
    tardy            UInt8,
    -- the source_version of the event that decided the status (0 when none)
    source_version   Int64,
    version          UInt64,
    deleted          UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY school_year
ORDER BY (district_id, school_id, student_id, date);

CREATE TABLE IF NOT EXISTS ${database}.student_metrics (
    school_year              UInt16,
    district_id              String,
    school_id                String,
    student_id               String,
    state_student_id         String,
    grade_level              String,
    subgroups                Array(String),
    as_of_date               Date,
    days_enrolled            UInt32,
    absent_milli             UInt32,
    excused_milli            UInt32,
    unexcused_milli          UInt32,
    suspended_milli          UInt32,
    days_tardy               UInt32,
    unexcused_window_milli   UInt32,
    absent_last_30_milli     UInt32,
    meets_min_enrollment     UInt8,
    is_chronically_absent    UInt8,
    tier                     Enum8('satisfactory' = 1, 'at_risk' = 2,
                                   'moderate_chronic' = 3, 'severe_chronic' = 4),
    is_truant                UInt8,
    -- data quality: events that did not count, and days with no record in a
    -- positive-attendance feed
    events_non_instructional UInt32,
    events_outside_enrollment UInt32,
    days_missing             UInt32,
    version                  UInt64,
    deleted                  UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY school_year
ORDER BY (district_id, school_id, student_id, school_year);
