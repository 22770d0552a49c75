//! One student-day: the final status by precedence and the absent amounts, in integer
//! milli-days. The rules are in docs/rollup-rules.md; `reference` re-implements them
//! independently.

use rollcall_model::Category;
use rollcall_policy::{PartialDayRule, Policy};

use crate::rows::DayStatus;

/// Category index in `Category::ALL` order.
pub(crate) const fn cat_index(c: Category) -> u8 {
    match c {
        Category::Present => 0,
        Category::Tardy => 1,
        Category::EarlyDeparture => 2,
        Category::ExcusedAbsence => 3,
        Category::UnexcusedAbsence => 4,
        Category::OutOfSchoolSuspension => 5,
        Category::InSchoolSuspension => 6,
        Category::NotEnrolled => 7,
    }
}

pub(crate) const fn cat_of_index(i: u8) -> Category {
    match i {
        0 => Category::Present,
        1 => Category::Tardy,
        2 => Category::EarlyDeparture,
        3 => Category::ExcusedAbsence,
        4 => Category::UnexcusedAbsence,
        5 => Category::OutOfSchoolSuspension,
        6 => Category::InSchoolSuspension,
        _ => Category::NotEnrolled,
    }
}

const PRESENT: usize = 0;
const TARDY: usize = 1;
const EARLY_DEPARTURE: usize = 2;
const EXCUSED: usize = 3;
const UNEXCUSED: usize = 4;
const OSS: usize = 5;
const ISS: usize = 6;
const NOT_ENROLLED: usize = 7;

/// Category indexes from the highest precedence to the lowest:
/// not_enrolled > out_of_school_suspension > unexcused > excused > in_school_suspension
/// > early_departure > tardy > present.
const PRECEDENCE: [usize; 8] = [
    NOT_ENROLLED,
    OSS,
    UNEXCUSED,
    EXCUSED,
    ISS,
    2,
    TARDY,
    PRESENT,
];

/// The order in which a day's counted absence is attributed to its parts (the same
/// precedence, absences only).
const ATTRIBUTION: [usize; 4] = [OSS, UNEXCUSED, EXCUSED, ISS];

/// An absent fraction as milli-days: clamped to [0, 1], rounded; non-finite = 0.
/// Categories that never miss time (present, tardy, early departure, not enrolled)
/// are always 0.
pub(crate) fn fraction_milli(category: Category, fraction: f64) -> u16 {
    if !category.takes_duration() || !fraction.is_finite() {
        return 0;
    }
    (fraction.clamp(0.0, 1.0) * 1000.0).round() as u16
}

/// The policy's settings the per-day rule needs, in a form cheap to test.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DayRules {
    counts_absent: [bool; 8],
    partial: PartialDayRule,
}

impl DayRules {
    pub(crate) fn new(p: &Policy) -> Self {
        let mut counts_absent = [false; 8];
        counts_absent[EXCUSED] = true;
        counts_absent[UNEXCUSED] = true;
        counts_absent[OSS] = p.out_of_school_suspension_counts_as_absent;
        counts_absent[ISS] = p.in_school_suspension_counts_as_absent;
        DayRules {
            counts_absent,
            partial: p.partial_day,
        }
    }

    /// The counted absence of a day with `raw` milli-days absent: the policy's
    /// partial-day rule ([`rollcall_policy::apply_partial_day_rule`], the one place it
    /// lives), on milli-days. Exact: every raw value 0..=1000 maps to 0..=1000 as the
    /// rule says (tested over the whole grid below).
    fn apply_partial(&self, raw: u16) -> u16 {
        let day = rollcall_policy::apply_partial_day_rule(f64::from(raw) / 1000.0, self.partial);
        (day * 1000.0).round() as u16
    }
}

/// The events of one student-day, accumulated.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DayAcc {
    mask: u8,
    /// Per category: sum of milli-days, capped at a day.
    raw: [u16; 8],
    /// Per category: the highest source_version.
    ver: [i64; 8],
}

/// A computed student-day (the value part of a `DayRow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DayVal {
    pub status: DayStatus,
    pub enrolled: u8,
    pub absent: u16,
    pub excused: u16,
    pub unexcused: u16,
    pub suspended: u16,
    pub tardy: u8,
    pub source_version: i64,
}

impl DayAcc {
    pub(crate) fn add(&mut self, cat: u8, milli: u16, version: i64) {
        let i = cat as usize;
        if self.mask & (1 << i) == 0 {
            self.mask |= 1 << i;
            self.raw[i] = milli.min(1000);
            self.ver[i] = version;
        } else {
            self.raw[i] = (self.raw[i] + milli).min(1000);
            self.ver[i] = self.ver[i].max(version);
        }
    }

    /// The day's value. `missing`: a day without events is `missing` rather than
    /// `no_event` (positive-attendance district).
    pub(crate) fn finish(&self, rules: &DayRules, missing: bool) -> DayVal {
        let has = |i: usize| self.mask & (1 << i) != 0;
        let Some(top) = PRECEDENCE.iter().copied().find(|&i| has(i)) else {
            return DayVal {
                status: if missing {
                    DayStatus::Missing
                } else {
                    DayStatus::NoEvent
                },
                enrolled: 1,
                absent: 0,
                excused: 0,
                unexcused: 0,
                suspended: 0,
                tardy: 0,
                source_version: 0,
            };
        };
        let status = DayStatus::from_category(cat_of_index(top as u8));
        let source_version = self.ver[top];
        if top == NOT_ENROLLED {
            return DayVal {
                status,
                enrolled: 0,
                absent: 0,
                excused: 0,
                unexcused: 0,
                suspended: 0,
                tardy: 0,
                source_version,
            };
        }
        let mut raw_total: u16 = 0;
        for i in ATTRIBUTION {
            if has(i) && rules.counts_absent[i] {
                raw_total = (raw_total + self.raw[i]).min(1000);
            }
        }
        let total = rules.apply_partial(raw_total);
        // attribute the counted total to the parts in precedence order; a total rounded
        // up by the half-day rule gives its extra to the first part present
        let mut part = [0u16; 8];
        let mut left = total;
        let mut first = None;
        for i in ATTRIBUTION {
            if has(i) && rules.counts_absent[i] {
                let take = left.min(self.raw[i]);
                part[i] = take;
                left -= take;
                if first.is_none() && self.raw[i] > 0 {
                    first = Some(i);
                }
            }
        }
        if left > 0 {
            if let Some(i) = first {
                part[i] += left;
            }
        }
        DayVal {
            status,
            enrolled: 1,
            absent: total,
            excused: part[EXCUSED],
            unexcused: part[UNEXCUSED],
            suspended: part[OSS] + part[ISS],
            // rollcall_policy::counts_as_tardy: tardy and early departure
            tardy: u8::from(has(TARDY) || has(EARLY_DEPARTURE)),
            source_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The integer semantics the engine had before it called the policy's function:
    /// fractional keeps the milli-days, the half-day rule rounds ≥ 500 up to a day and
    /// less down to 0, full-day-only counts only a whole day.
    fn integer_rule(raw: u16, rule: PartialDayRule) -> u16 {
        match rule {
            PartialDayRule::Fractional => raw,
            PartialDayRule::HalfDayThreshold => 1000 * u16::from(raw >= 500),
            PartialDayRule::FullDayOnly => 1000 * u16::from(raw >= 1000),
        }
    }

    #[test]
    fn the_partial_day_rule_is_the_policys_on_every_milli_day() {
        for rule in [
            PartialDayRule::Fractional,
            PartialDayRule::HalfDayThreshold,
            PartialDayRule::FullDayOnly,
        ] {
            let p = Policy {
                partial_day: rule,
                ..Policy::default()
            };
            let rules = DayRules::new(&p);
            for raw in 0..=1000u16 {
                assert_eq!(
                    rules.apply_partial(raw),
                    integer_rule(raw, rule),
                    "{rule:?} at {raw} milli-days"
                );
                let policy_days =
                    rollcall_policy::apply_partial_day_rule(f64::from(raw) / 1000.0, rule);
                assert_eq!(
                    f64::from(rules.apply_partial(raw)) / 1000.0,
                    policy_days,
                    "{rule:?} at {raw}"
                );
            }
        }
    }
}
