//! Keep rules in restic's words: the newest N archives, and the newest archive of each of the
//! last N hours, days, ISO weeks, months and years that have one. Calendar buckets are UTC,
//! like every time vdar shows ([`crate::clock`]), so a policy means the same on every proxy.

use crate::clock::utc_fields;

/// How many of each to keep; zero keeps none by that rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N.
    pub last: u32,
    /// One per hour, for the last N hours that have one.
    pub hourly: u32,
    /// One per day.
    pub daily: u32,
    /// One per ISO week (Monday to Sunday).
    pub weekly: u32,
    /// One per month.
    pub monthly: u32,
    /// One per year.
    pub yearly: u32,
}

/// A rule: its name, its count in a policy, and the bucket a time falls in.
type Rule = (&'static str, fn(&Policy) -> u32, fn(u64) -> u64);

/// The rules, in the order reasons are given.
const RULES: [Rule; 6] = [
    ("last", |p| p.last, |_| 0),
    ("hourly", |p| p.hourly, |t| t / 3600),
    ("daily", |p| p.daily, |t| t / 86_400),
    ("weekly", |p| p.weekly, iso_week),
    (
        "monthly",
        |p| p.monthly,
        |t| {
            let (y, m, ..) = utc_fields(t);
            y * 12 + m
        },
    ),
    ("yearly", |p| p.yearly, |t| utc_fields(t).0),
];

impl Policy {
    /// Whether no rule keeps anything (a prune with it would delete everything: refused).
    pub fn is_empty(&self) -> bool {
        RULES.iter().all(|(_, n, _)| n(self) == 0)
    }

    /// For creation times `newest_first` (sorted, newest first), the rules that keep each one;
    /// an empty list lets it go.
    pub fn apply(&self, newest_first: &[u64]) -> Vec<Vec<&'static str>> {
        let mut out = vec![Vec::new(); newest_first.len()];
        for (name, count, bucket) in RULES {
            let mut left = count(self);
            let mut last: Option<u64> = None;
            for (i, &t) in newest_first.iter().enumerate() {
                if left == 0 {
                    break;
                }
                // `last` keeps every archive; the others the first (newest) of each bucket.
                let b = bucket(t);
                if name == "last" || last != Some(b) {
                    out[i].push(name);
                    last = Some(b);
                    left -= 1;
                }
            }
        }
        out
    }
}

/// The ISO week of `t` as one number: weeks run Monday to Sunday, and belong to the year of
/// their Thursday. 1970-01-01 was a Thursday, so weeks counted from the Monday before it
/// (day -3) are ISO weeks.
fn iso_week(t: u64) -> u64 {
    (t / 86_400 + 3) / 7
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    /// 2026-12-07 00:00 UTC, a Monday.
    const MON: u64 = 1_796_601_600;

    fn kept(p: Policy, times: &[u64]) -> Vec<usize> {
        p.apply(times)
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn the_anchor_is_a_monday() {
        assert_eq!(utc_fields(MON), (2026, 12, 7, 0, 0, 0));
        assert_eq!(iso_week(MON), iso_week(MON + 7 * DAY - 1));
        assert_ne!(iso_week(MON), iso_week(MON - 1));
    }

    #[test]
    fn rules_keep_the_newest_of_each_bucket() {
        // Two a day for ten days, newest first: 09:00 and 01:00.
        let times: Vec<u64> = (0..10)
            .rev()
            .flat_map(|d| [MON + d * DAY + 9 * 3600, MON + d * DAY + 3600])
            .collect();
        let last = Policy {
            last: 3,
            ..Policy::default()
        };
        assert_eq!(kept(last, &times), [0, 1, 2]);
        let daily = Policy {
            daily: 4,
            ..Policy::default()
        };
        assert_eq!(kept(daily, &times), [0, 2, 4, 6]);
        // Days 7..9 are the week after MON's: its newest (day 9) and MON's week's newest (day 6).
        let weekly = Policy {
            weekly: 5,
            ..Policy::default()
        };
        assert_eq!(kept(weekly, &times), [0, 6]);
        let both = Policy {
            last: 1,
            daily: 2,
            monthly: 1,
            ..Policy::default()
        };
        let r = both.apply(&times);
        assert_eq!(r[0], ["last", "daily", "monthly"]);
        assert_eq!(r[2], ["daily"]);
        assert!(r[1].is_empty() && r[3].is_empty());
        assert!(Policy::default().is_empty() && !last.is_empty());
    }

    #[test]
    fn months_and_years_are_calendar_ones() {
        // 2026-11-30 23:59:59 and 2026-12-01 00:00:00 are in different months and the same year.
        let dec1 = MON - 6 * DAY;
        let times = [dec1, dec1 - 1];
        let monthly = Policy {
            monthly: 2,
            ..Policy::default()
        };
        assert_eq!(kept(monthly, &times), [0, 1]);
        let yearly = Policy {
            yearly: 2,
            ..Policy::default()
        };
        assert_eq!(kept(yearly, &times), [0]);
    }
}
