//! District school calendars: ≈180 instructional days from late August to early June,
//! weekdays minus the usual US holidays and breaks, a few teacher-only days, and winter
//! weather days that are made up at the end of the year.

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use rand::Rng;

use crate::model::CalendarEvent;

/// A snow day: an instructional day turned into a weather day on the day itself, and
/// a make-up day added after the last day, announced a few days later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeatherDay {
    pub date: NaiveDate,
    pub makeup: NaiveDate,
    pub announced: NaiveDate,
}

/// One district's calendar: what is published before the year starts, and the weather
/// days that change it during the year.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistrictCalendar {
    /// Every weekday from the first pre-service day to the planned last day, with its
    /// event, as published before the year.
    pub published: Vec<(NaiveDate, CalendarEvent)>,
    pub weather: Vec<WeatherDay>,
}

impl DistrictCalendar {
    /// The final calendar (weather days and make-up days applied), sorted by date.
    pub fn final_dates(&self) -> Vec<(NaiveDate, CalendarEvent)> {
        let mut out: Vec<(NaiveDate, CalendarEvent)> = self
            .published
            .iter()
            .map(|&(d, e)| {
                if self.weather.iter().any(|w| w.date == d) {
                    (d, CalendarEvent::WeatherDay)
                } else {
                    (d, e)
                }
            })
            .collect();
        out.extend(
            self.weather
                .iter()
                .map(|w| (w.makeup, CalendarEvent::MakeUpDay)),
        );
        out.sort();
        out
    }

    /// Instructional days of the final calendar, sorted.
    pub fn instructional_days(&self) -> Vec<NaiveDate> {
        self.final_dates()
            .into_iter()
            .filter(|(_, e)| e.is_instructional())
            .map(|(d, _)| d)
            .collect()
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid calendar date")
}

fn is_weekday(d: NaiveDate) -> bool {
    !matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// The `n`th (1-based) `wd` of a month.
pub fn nth_weekday(y: i32, m: u32, wd: Weekday, n: u32) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(y, m, wd, n as u8).expect("nth weekday exists")
}

fn last_weekday(y: i32, m: u32, wd: Weekday) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(y, m, wd, 5).unwrap_or_else(|| nth_weekday(y, m, wd, 4))
}

fn next_weekday(mut d: NaiveDate) -> NaiveDate {
    loop {
        d += Duration::days(1);
        if is_weekday(d) {
            return d;
        }
    }
}

/// Builds one district's calendar for the school year ending in `school_year`.
pub fn district_calendar(school_year: i32, rng: &mut impl Rng) -> DistrictCalendar {
    let y0 = school_year - 1;
    let y1 = school_year;

    // First day: a Monday–Wednesday between 18 and 28 August.
    let starts: Vec<NaiveDate> = (18..=28)
        .map(|d| date(y0, 8, d))
        .filter(|d| matches!(d.weekday(), Weekday::Mon | Weekday::Tue | Weekday::Wed))
        .collect();
    let first = starts[rng.random_range(0..starts.len())];

    let mut holidays: Vec<NaiveDate> = Vec::new();
    holidays.push(nth_weekday(y0, 9, Weekday::Mon, 1)); // Labor Day
    let veterans = date(y0, 11, 11);
    if is_weekday(veterans) && rng.random_bool(0.5) {
        holidays.push(veterans);
    }
    let thanksgiving = nth_weekday(y0, 11, Weekday::Thu, 4);
    holidays.push(thanksgiving);
    holidays.push(thanksgiving + Duration::days(1));
    if rng.random_bool(0.3) {
        holidays.push(thanksgiving - Duration::days(1));
    }
    // Winter break: the Monday on or before 23 December through the Friday on or after
    // 1 January (about two weeks).
    let mut wb_start = date(y0, 12, 23);
    while wb_start.weekday() != Weekday::Mon {
        wb_start -= Duration::days(1);
    }
    let mut wb_end = date(y1, 1, 1);
    while wb_end.weekday() != Weekday::Fri {
        wb_end += Duration::days(1);
    }
    let mut d = wb_start;
    while d <= wb_end {
        if is_weekday(d) {
            holidays.push(d);
        }
        d += Duration::days(1);
    }
    holidays.push(nth_weekday(y1, 1, Weekday::Mon, 3)); // Martin Luther King Jr. Day
    holidays.push(nth_weekday(y1, 2, Weekday::Mon, 3)); // Presidents Day
                                                        // Spring break: a week starting on a Monday between 9 March and 6 April.
    let mondays: Vec<NaiveDate> = (0..5)
        .map(|w| nth_weekday(y1, 3, Weekday::Mon, 1) + Duration::weeks(w))
        .filter(|m| *m >= date(y1, 3, 9) && *m <= date(y1, 4, 6))
        .collect();
    let sb = mondays[rng.random_range(0..mondays.len())];
    for i in 0..5 {
        holidays.push(sb + Duration::days(i));
    }
    holidays.push(last_weekday(y1, 5, Weekday::Mon)); // Memorial Day
    holidays.push(date(y1, 6, 19)); // Juneteenth (only matters if the year runs that late)

    // Teacher-only days: two pre-service days before the first day and 2–3 in-service
    // days during the year (on days that would otherwise be instructional).
    let mut teacher: Vec<NaiveDate> = Vec::new();
    let mut p = first;
    for _ in 0..2 {
        p -= Duration::days(1);
        while !is_weekday(p) {
            p -= Duration::days(1);
        }
        teacher.push(p);
    }
    let n_inservice = rng.random_range(2..=3);
    while teacher.len() < 2 + n_inservice {
        let candidate = date(y0, 10, 1) + Duration::days(rng.random_range(0..180));
        if is_weekday(candidate) && !holidays.contains(&candidate) && !teacher.contains(&candidate)
        {
            teacher.push(candidate);
        }
    }

    let target: u32 = rng.random_range(178..=181);
    let mut published = Vec::new();
    let mut d = *teacher.iter().min().expect("pre-service days");
    let mut count = 0;
    while count < target {
        if is_weekday(d) {
            let event = if holidays.contains(&d) {
                CalendarEvent::Holiday
            } else if teacher.contains(&d) {
                CalendarEvent::TeacherOnlyDay
            } else {
                count += 1;
                CalendarEvent::InstructionalDay
            };
            published.push((d, event));
        }
        d += Duration::days(1);
    }
    let last = published.last().expect("a calendar").0;

    // Weather days: 0–3 instructional days between 1 December and the end of February.
    let n_weather = match rng.random_range(0..100) {
        0..25 => 0,
        25..65 => 1,
        65..90 => 2,
        _ => 3,
    };
    let winter: Vec<NaiveDate> = published
        .iter()
        .filter(|(d, e)| e.is_instructional() && *d >= date(y0, 12, 1) && *d <= last_day_of_feb(y1))
        .map(|(d, _)| *d)
        .collect();
    let mut weather_dates: Vec<NaiveDate> = Vec::new();
    while weather_dates.len() < n_weather && !winter.is_empty() {
        let w = winter[rng.random_range(0..winter.len())];
        if !weather_dates.contains(&w) {
            weather_dates.push(w);
        }
    }
    weather_dates.sort();
    let mut makeup = last;
    let weather = weather_dates
        .into_iter()
        .map(|w| {
            makeup = next_weekday(makeup);
            while holidays.contains(&makeup) {
                makeup = next_weekday(makeup);
            }
            WeatherDay {
                date: w,
                makeup,
                announced: w + Duration::days(rng.random_range(1..=7)),
            }
        })
        .collect();
    DistrictCalendar { published, weather }
}

fn last_day_of_feb(y: i32) -> NaiveDate {
    date(y, 3, 1) - Duration::days(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_180_instructional_days_from_late_august_to_june() {
        for seed in 0..20 {
            let mut rng = crate::rng::stream(seed, &[1]);
            let cal = district_calendar(2025, &mut rng);
            let days = cal.instructional_days();
            assert!((178..=184).contains(&days.len()), "{} days", days.len());
            let first = days[0];
            let last = *days.last().unwrap();
            assert!(
                first >= date(2024, 8, 18) && first <= date(2024, 8, 28),
                "{first}"
            );
            assert!(
                last >= date(2025, 5, 20) && last <= date(2025, 6, 25),
                "{last}"
            );
            assert!(days.iter().all(|d| is_weekday(*d)));
            for holiday in [
                date(2024, 9, 2),   // Labor Day
                date(2024, 11, 28), // Thanksgiving
                date(2024, 11, 29),
                date(2024, 12, 25),
                date(2025, 1, 1),
                date(2025, 1, 20), // MLK
                date(2025, 2, 17), // Presidents Day
                date(2025, 5, 26), // Memorial Day
            ] {
                assert!(!days.contains(&holiday), "{holiday} is a holiday");
            }
            for w in &cal.weather {
                assert!(!days.contains(&w.date));
                assert!(days.contains(&w.makeup));
                assert!(w.announced > w.date);
            }
        }
    }
}
