-- BI views over the rollup tables of 0001. Contract: docs/bi-views.md.
--
-- Current rows only: each key's row with the highest `version` (argMax), then
-- deleted = 0. argMax rather than FINAL so that the deleted filter can never be applied
-- before the latest version is chosen, on any server version.
--
-- Rendered from the state's policy: `rollcall migrate` replaces each ${policy.NAME}
-- with SQL text from rollcall_clickhouse::policy_views (the one list of the settings the
-- views use) and records the policy's fingerprint in ${database}.view_policy; services
-- whose policy differs refuse to start, and `rollcall migrate --policy` re-renders this
-- file. `rollcall migrate --print-sql` shows it rendered. Every view judges students
-- with the same settings:
--   minimum enrollment   days >= ${policy.min_enrolled_days}
--   chronic              absent_milli * 10 >= days * ${policy.chronic_threshold_bp}
--                        (rates in basis points: absent days / days >= bp / 10000, exact
--                        integers; agrees with rollcall_policy::is_chronic)
--   tiers                the same comparison with ${policy.tiers.*_bp}; a cut point
--                        belongs to the higher tier
--   suppression          a row is suppressed when any of its counts c is small:
--                        c < ${policy.publication_threshold}, a zero only when
--                        ${policy.suppress_zero_counts} = 1 (row-level primary suppression;
--                        no complementary suppression yet)
--   state identity       the state counts a student once per state_student_id when
--                        ${policy.state_identity_by_state_id} = 1 and the row has one
--                        (judged on their days summed over every district), else once
--                        per (district_id, student_id)
--   grades               the aggregates (school, district, state, trend) count student
--                        rows whose grade_level is in ${policy.aggregate_grades} or
--                        blank (no grade given); the by-grade view shows every grade,
--                        so PK, TK, adult and ungraded students are reported there
-- student_metrics_current computes meets_min_enrollment, is_chronically_absent and tier
-- from days_enrolled and absent_milli with these settings (the rollup's stored flags
-- are not read), so rows written under an earlier policy are judged by this one.
-- This file holds views only: it is re-run whenever the policy changes.
--
-- Must run on ClickHouse 18.16 and on current releases: no window functions, no
-- LowCardinality, no CREATE OR REPLACE VIEW (drop, then create). An aggregate never
-- takes the name of a column it reads. Dependent views are dropped first.

DROP TABLE IF EXISTS ${database}.chronic_absence_trend;
DROP TABLE IF EXISTS ${database}.state_chronic_absence;
DROP TABLE IF EXISTS ${database}.district_chronic_absence;
DROP TABLE IF EXISTS ${database}.school_chronic_absence_by_grade;
DROP TABLE IF EXISTS ${database}.school_chronic_absence;
DROP TABLE IF EXISTS ${database}.student_attendance;
DROP TABLE IF EXISTS ${database}.student_metrics_current;
DROP TABLE IF EXISTS ${database}.student_days_current;

CREATE VIEW ${database}.student_days_current AS
SELECT
    school_year,
    district_id,
    school_id,
    student_id,
    date,
    cur_status AS status,
    cur_enrolled AS enrolled,
    cur_absent AS absent_milli,
    cur_excused AS excused_milli,
    cur_unexcused AS unexcused_milli,
    cur_suspended AS suspended_milli,
    cur_tardy AS tardy,
    cur_source_version AS source_version,
    cur_version AS version
FROM
(
    SELECT
        school_year,
        district_id,
        school_id,
        student_id,
        date,
        argMax(status, version) AS cur_status,
        argMax(enrolled, version) AS cur_enrolled,
        argMax(absent_milli, version) AS cur_absent,
        argMax(excused_milli, version) AS cur_excused,
        argMax(unexcused_milli, version) AS cur_unexcused,
        argMax(suspended_milli, version) AS cur_suspended,
        argMax(tardy, version) AS cur_tardy,
        argMax(source_version, version) AS cur_source_version,
        argMax(deleted, version) AS cur_deleted,
        max(version) AS cur_version
    FROM ${database}.student_days
    GROUP BY school_year, district_id, school_id, student_id, date
)
WHERE cur_deleted = 0;

CREATE VIEW ${database}.student_metrics_current AS
SELECT
    school_year,
    district_id,
    school_id,
    student_id,
    cur_state_student_id AS state_student_id,
    cur_grade_level AS grade_level,
    cur_subgroups AS subgroups,
    cur_as_of_date AS as_of_date,
    cur_days_enrolled AS days_enrolled,
    cur_absent AS absent_milli,
    cur_excused AS excused_milli,
    cur_unexcused AS unexcused_milli,
    cur_suspended AS suspended_milli,
    cur_days_tardy AS days_tardy,
    cur_unexcused_window AS unexcused_window_milli,
    cur_absent_last_30 AS absent_last_30_milli,
    toUInt8(cur_days_enrolled >= ${policy.min_enrolled_days}) AS meets_min_enrollment,
    toUInt8(cur_days_enrolled >= ${policy.min_enrolled_days}
        AND cur_absent * 10 >= cur_days_enrolled * ${policy.chronic_threshold_bp}) AS is_chronically_absent,
    CAST(multiIf(
        cur_days_enrolled = 0, 'satisfactory',
        cur_absent * 10 >= cur_days_enrolled * ${policy.tiers.severe_chronic_bp}, 'severe_chronic',
        cur_absent * 10 >= cur_days_enrolled * ${policy.tiers.moderate_chronic_bp}, 'moderate_chronic',
        cur_absent * 10 >= cur_days_enrolled * ${policy.tiers.at_risk_bp}, 'at_risk',
        'satisfactory')
        AS Enum8('satisfactory' = 1, 'at_risk' = 2, 'moderate_chronic' = 3, 'severe_chronic' = 4)) AS tier,
    cur_truant AS is_truant,
    cur_non_instructional AS events_non_instructional,
    cur_outside AS events_outside_enrollment,
    cur_missing AS days_missing,
    cur_version AS version
FROM
(
    SELECT
        school_year,
        district_id,
        school_id,
        student_id,
        argMax(state_student_id, version) AS cur_state_student_id,
        argMax(grade_level, version) AS cur_grade_level,
        argMax(subgroups, version) AS cur_subgroups,
        argMax(as_of_date, version) AS cur_as_of_date,
        argMax(days_enrolled, version) AS cur_days_enrolled,
        argMax(absent_milli, version) AS cur_absent,
        argMax(excused_milli, version) AS cur_excused,
        argMax(unexcused_milli, version) AS cur_unexcused,
        argMax(suspended_milli, version) AS cur_suspended,
        argMax(days_tardy, version) AS cur_days_tardy,
        argMax(unexcused_window_milli, version) AS cur_unexcused_window,
        argMax(absent_last_30_milli, version) AS cur_absent_last_30,
        argMax(is_truant, version) AS cur_truant,
        argMax(events_non_instructional, version) AS cur_non_instructional,
        argMax(events_outside_enrollment, version) AS cur_outside,
        argMax(days_missing, version) AS cur_missing,
        argMax(deleted, version) AS cur_deleted,
        max(version) AS cur_version
    FROM ${database}.student_metrics
    GROUP BY school_year, district_id, school_id, student_id
)
WHERE cur_deleted = 0;

CREATE VIEW ${database}.student_attendance AS
SELECT
    school_year,
    district_id,
    school_id,
    student_id,
    grade_level,
    as_of_date,
    days_enrolled,
    days_enrolled - absent_milli / 1000 AS days_present,
    absent_milli / 1000 AS days_absent,
    excused_milli / 1000 AS days_absent_excused,
    unexcused_milli / 1000 AS days_absent_unexcused,
    suspended_milli / 1000 AS days_suspended,
    days_tardy,
    if(days_enrolled = 0, NULL, absent_milli / 1000 / days_enrolled) AS absence_rate,
    if(days_enrolled = 0, NULL, 1 - absent_milli / 1000 / days_enrolled) AS attendance_rate,
    is_chronically_absent,
    tier,
    unexcused_window_milli / 1000 AS unexcused_absences_window,
    is_truant,
    absent_last_30_milli / 1000 AS days_absent_last_30,
    meets_min_enrollment,
    state_student_id,
    subgroups,
    events_non_instructional,
    events_outside_enrollment,
    days_missing
FROM ${database}.student_metrics_current;

CREATE VIEW ${database}.school_chronic_absence AS
SELECT
    school_year,
    district_id,
    school_id,
    latest AS as_of_date,
    if(suppressed = 1, NULL, n_enrolled) AS students_enrolled,
    if(suppressed = 1, NULL, n_chronic) AS students_chronically_absent,
    if(suppressed = 1 OR n_enrolled = 0, NULL, n_chronic / n_enrolled) AS chronic_absence_rate,
    if(suppressed = 1, NULL, n_satisfactory) AS students_satisfactory,
    if(suppressed = 1, NULL, n_at_risk) AS students_at_risk,
    if(suppressed = 1, NULL, n_moderate) AS students_moderate_chronic,
    if(suppressed = 1, NULL, n_severe) AS students_severe_chronic,
    suppressed
FROM
(
    SELECT
        school_year,
        district_id,
        school_id,
        max(as_of_date) AS latest,
        countIf(meets_min_enrollment = 1) AS n_enrolled,
        countIf(is_chronically_absent = 1) AS n_chronic,
        countIf(meets_min_enrollment = 1 AND tier = 'satisfactory') AS n_satisfactory,
        countIf(meets_min_enrollment = 1 AND tier = 'at_risk') AS n_at_risk,
        countIf(meets_min_enrollment = 1 AND tier = 'moderate_chronic') AS n_moderate,
        countIf(meets_min_enrollment = 1 AND tier = 'severe_chronic') AS n_severe,
        toUInt8(arrayExists(c -> c < ${policy.publication_threshold}
            AND (c > 0 OR ${policy.suppress_zero_counts} = 1),
            [n_enrolled, n_chronic, n_satisfactory, n_at_risk, n_moderate, n_severe])) AS suppressed
    FROM ${database}.student_metrics_current
    WHERE grade_level = '' OR grade_level IN ${policy.aggregate_grades}
    GROUP BY school_year, district_id, school_id
);

CREATE VIEW ${database}.school_chronic_absence_by_grade AS
SELECT
    school_year,
    district_id,
    school_id,
    grade,
    latest AS as_of_date,
    if(suppressed = 1, NULL, n_enrolled) AS students_enrolled,
    if(suppressed = 1, NULL, n_chronic) AS students_chronically_absent,
    if(suppressed = 1 OR n_enrolled = 0, NULL, n_chronic / n_enrolled) AS chronic_absence_rate,
    suppressed
FROM
(
    SELECT
        school_year,
        district_id,
        school_id,
        grade_level AS grade,
        max(as_of_date) AS latest,
        countIf(meets_min_enrollment = 1) AS n_enrolled,
        countIf(is_chronically_absent = 1) AS n_chronic,
        toUInt8(arrayExists(c -> c < ${policy.publication_threshold}
            AND (c > 0 OR ${policy.suppress_zero_counts} = 1),
            [n_enrolled, n_chronic])) AS suppressed
    FROM ${database}.student_metrics_current
    GROUP BY school_year, district_id, school_id, grade_level
);

CREATE VIEW ${database}.district_chronic_absence AS
SELECT
    school_year,
    district_id,
    latest AS as_of_date,
    if(suppressed = 1, NULL, n_enrolled) AS students_enrolled,
    if(suppressed = 1, NULL, n_chronic) AS students_chronically_absent,
    if(suppressed = 1 OR n_enrolled = 0, NULL, n_chronic / n_enrolled) AS chronic_absence_rate,
    if(suppressed = 1, NULL, n_satisfactory) AS students_satisfactory,
    if(suppressed = 1, NULL, n_at_risk) AS students_at_risk,
    if(suppressed = 1, NULL, n_moderate) AS students_moderate_chronic,
    if(suppressed = 1, NULL, n_severe) AS students_severe_chronic,
    suppressed
FROM
(
    SELECT
        school_year,
        district_id,
        max(student_latest) AS latest,
        countIf(de >= ${policy.min_enrolled_days}) AS n_enrolled,
        countIf(de >= ${policy.min_enrolled_days}
            AND am * 10 >= de * ${policy.chronic_threshold_bp}) AS n_chronic,
        countIf(de >= ${policy.min_enrolled_days}
            AND am * 10 < de * ${policy.tiers.at_risk_bp}) AS n_satisfactory,
        countIf(de >= ${policy.min_enrolled_days}
            AND am * 10 >= de * ${policy.tiers.at_risk_bp}
            AND am * 10 < de * ${policy.tiers.moderate_chronic_bp}) AS n_at_risk,
        countIf(de >= ${policy.min_enrolled_days}
            AND am * 10 >= de * ${policy.tiers.moderate_chronic_bp}
            AND am * 10 < de * ${policy.tiers.severe_chronic_bp}) AS n_moderate,
        countIf(de >= ${policy.min_enrolled_days}
            AND am * 10 >= de * ${policy.tiers.severe_chronic_bp}) AS n_severe,
        toUInt8(arrayExists(c -> c < ${policy.publication_threshold}
            AND (c > 0 OR ${policy.suppress_zero_counts} = 1),
            [n_enrolled, n_chronic, n_satisfactory, n_at_risk, n_moderate, n_severe])) AS suppressed
    FROM
    (
        SELECT
            school_year,
            district_id,
            student_id,
            max(as_of_date) AS student_latest,
            sum(days_enrolled) AS de,
            sum(absent_milli) AS am
        FROM ${database}.student_metrics_current
        WHERE grade_level = '' OR grade_level IN ${policy.aggregate_grades}
        GROUP BY school_year, district_id, student_id
    )
    GROUP BY school_year, district_id
);

CREATE VIEW ${database}.state_chronic_absence AS
SELECT
    school_year,
    latest AS as_of_date,
    if(suppressed = 1, NULL, n_enrolled) AS students_enrolled,
    if(suppressed = 1, NULL, n_chronic) AS students_chronically_absent,
    if(suppressed = 1 OR n_enrolled = 0, NULL, n_chronic / n_enrolled) AS chronic_absence_rate,
    if(suppressed = 1, NULL, n_satisfactory) AS students_satisfactory,
    if(suppressed = 1, NULL, n_at_risk) AS students_at_risk,
    if(suppressed = 1, NULL, n_moderate) AS students_moderate_chronic,
    if(suppressed = 1, NULL, n_severe) AS students_severe_chronic,
    suppressed
FROM
(
    SELECT
        school_year,
        max(student_latest) AS latest,
        countIf(de >= ${policy.min_enrolled_days}) AS n_enrolled,
        countIf(de >= ${policy.min_enrolled_days}
            AND am * 10 >= de * ${policy.chronic_threshold_bp}) AS n_chronic,
        countIf(de >= ${policy.min_enrolled_days}
            AND am * 10 < de * ${policy.tiers.at_risk_bp}) AS n_satisfactory,
        countIf(de >= ${policy.min_enrolled_days}
            AND am * 10 >= de * ${policy.tiers.at_risk_bp}
            AND am * 10 < de * ${policy.tiers.moderate_chronic_bp}) AS n_at_risk,
        countIf(de >= ${policy.min_enrolled_days}
            AND am * 10 >= de * ${policy.tiers.moderate_chronic_bp}
            AND am * 10 < de * ${policy.tiers.severe_chronic_bp}) AS n_moderate,
        countIf(de >= ${policy.min_enrolled_days}
            AND am * 10 >= de * ${policy.tiers.severe_chronic_bp}) AS n_severe,
        toUInt8(arrayExists(c -> c < ${policy.publication_threshold}
            AND (c > 0 OR ${policy.suppress_zero_counts} = 1),
            [n_enrolled, n_chronic, n_satisfactory, n_at_risk, n_moderate, n_severe])) AS suppressed
    FROM
    (
        SELECT
            school_year,
            who,
            max(as_of_date) AS student_latest,
            sum(days_enrolled) AS de,
            sum(absent_milli) AS am
        FROM
        (
            SELECT
                school_year,
                if(${policy.state_identity_by_state_id} = 1 AND state_student_id != '',
                    concat('state:', state_student_id),
                    concat('district:', district_id, '/', student_id)) AS who,
                as_of_date,
                days_enrolled,
                absent_milli
            FROM ${database}.student_metrics_current
            WHERE grade_level = '' OR grade_level IN ${policy.aggregate_grades}
        )
        GROUP BY school_year, who
    )
    GROUP BY school_year
);

CREATE VIEW ${database}.chronic_absence_trend AS
SELECT
    school_year,
    district_id,
    school_id,
    day AS date,
    if(suppressed = 1, NULL, n_enrolled) AS students_enrolled,
    if(suppressed = 1, NULL, n_chronic) AS students_chronically_absent,
    if(suppressed = 1 OR n_enrolled = 0, NULL, n_chronic / n_enrolled) AS chronic_absence_rate,
    suppressed
FROM
(
    SELECT
        school_year,
        district_id,
        school_id,
        day,
        toUInt64(n_enrolled_signed) AS n_enrolled,
        toUInt64(n_chronic_signed) AS n_chronic,
        toUInt8(arrayExists(c -> c < ${policy.publication_threshold}
            AND (c > 0 OR ${policy.suppress_zero_counts} = 1),
            [n_enrolled, n_chronic])) AS suppressed
    FROM
    (
        SELECT
            school_year,
            district_id,
            school_id,
            arraySort(groupArray((day, d_enrolled, d_chronic))) AS per_day,
            arrayMap(t -> t.1, per_day) AS days,
            arrayCumSum(arrayMap(t -> t.2, per_day)) AS enrolled_as_of,
            arrayCumSum(arrayMap(t -> t.3, per_day)) AS chronic_as_of
        FROM
        (
            SELECT
                school_year,
                district_id,
                school_id,
                step.1 AS day,
                sum(step.2) AS d_enrolled,
                sum(step.3) AS d_chronic
            FROM
            (
                SELECT
                    school_year,
                    district_id,
                    school_id,
                    arraySort(groupArray((date, enrolled, absent_milli))) AS rows_by_date,
                    arrayCumSum(arrayMap(t -> toInt64(t.2), rows_by_date)) AS cum_days,
                    arrayCumSum(arrayMap(t -> toInt64(t.3), rows_by_date)) AS cum_absent,
                    arrayMap(e -> toInt64(e >= ${policy.min_enrolled_days}), cum_days) AS counted,
                    arrayMap((e, a) -> toInt64(e >= ${policy.min_enrolled_days}
                        AND a * 10 >= e * ${policy.chronic_threshold_bp}), cum_days, cum_absent) AS chronic,
                    arrayMap((c, p) -> c - p, counted, arrayPushFront(arrayPopBack(counted), toInt64(0))) AS counted_delta,
                    arrayMap((c, p) -> c - p, chronic, arrayPushFront(arrayPopBack(chronic), toInt64(0))) AS chronic_delta
                FROM ${database}.student_days_current
                WHERE (school_year, district_id, school_id, student_id) NOT IN
                    (SELECT school_year, district_id, school_id, student_id
                     FROM ${database}.student_metrics_current
                     WHERE grade_level != '' AND grade_level NOT IN ${policy.aggregate_grades})
                GROUP BY school_year, district_id, school_id, student_id
            )
            ARRAY JOIN arrayMap((t, c, k) -> (t.1, c, k), rows_by_date, counted_delta, chronic_delta) AS step
            GROUP BY school_year, district_id, school_id, day
        )
        GROUP BY school_year, district_id, school_id
    )
    ARRAY JOIN days AS day, enrolled_as_of AS n_enrolled_signed, chronic_as_of AS n_chronic_signed
);
