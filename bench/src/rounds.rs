//! Repeated rounds of one scenario: each round runs the router and then Mosquitto, so a slow
//! spell of the shared machine hits one round, not one system; the median ratio is the result.

use serde::Serialize;

use crate::report::Report;

/// One round's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    /// Router envelopes received per second.
    pub router_per_s: f64,
    /// Mosquitto messages received per second.
    pub baseline_per_s: f64,
    /// Router p99, ms.
    pub router_p99_ms: f64,
    /// Mosquitto p99, ms.
    pub baseline_p99_ms: f64,
    /// Router throughput / Mosquitto throughput.
    pub throughput_ratio: f64,
    /// Router p99 / Mosquitto p99.
    pub p99_ratio: f64,
    /// Router CPU per envelope received, µs.
    pub router_cpu_us: f64,
    /// Mosquitto CPU per message received, µs.
    pub baseline_cpu_us: f64,
    /// Envelopes lost by either system in the round (must be zero).
    pub lost: u64,
    /// Envelopes the router accepted but delivered only after the harness stopped waiting:
    /// still queued for their recipients when the round ended.
    pub late: u64,
    /// Offered envelopes per second in all (0: closed loop).
    pub offered_per_s: u64,
    /// The router's closed-loop maximum the round's rate was set from (`--rate half`).
    pub router_maximum_per_s: Option<f64>,
}

/// Every round of a scenario and the medians of their ratios.
#[derive(Debug, Serialize)]
pub struct Rounds {
    /// Scenario name.
    pub scenario: String,
    /// The rounds in the order they ran.
    pub rounds: Vec<Round>,
    /// Median of the rounds' throughput ratios.
    pub median_throughput_ratio: f64,
    /// Median of the rounds' p99 ratios.
    pub median_p99_ratio: f64,
    /// Median of the router's CPU per envelope, µs.
    pub median_router_cpu_us: f64,
}

impl Rounds {
    /// The summary of `reports`, one per round, of `scenario`.
    pub fn new(scenario: &str, reports: &[Report]) -> Self {
        let rounds: Vec<Round> = reports
            .iter()
            .map(|report| Round {
                router_per_s: report.router.throughput_per_s,
                baseline_per_s: report.baseline.throughput_per_s,
                router_p99_ms: report.router.p99_ms,
                baseline_p99_ms: report.baseline.p99_ms,
                throughput_ratio: report.throughput_ratio,
                p99_ratio: report.p99_ratio,
                router_cpu_us: report.router.cpu_us_per_message(),
                baseline_cpu_us: report.baseline.cpu_us_per_message(),
                lost: report.router.lost + report.baseline.lost,
                late: report.router.still_queued,
                offered_per_s: report.load.4,
                router_maximum_per_s: report.router_maximum_per_s,
            })
            .collect();
        Self {
            scenario: scenario.to_owned(),
            median_throughput_ratio: median(rounds.iter().map(|r| r.throughput_ratio)),
            median_p99_ratio: median(rounds.iter().map(|r| r.p99_ratio)),
            median_router_cpu_us: median(rounds.iter().map(|r| r.router_cpu_us)),
            rounds,
        }
    }

    /// The markdown table: a row per round, then the medians.
    pub fn markdown(&self) -> String {
        // Rounds at half the maximum say what each measured and offered.
        let at_half = self.rounds.iter().any(|r| r.router_maximum_per_s.is_some());
        let mut out = format!(
            "### {} — {} rounds\n\n| round |{} router per s | mosquitto per s | ratio | router p99 ms | mosquitto p99 ms | p99 ratio | router CPU µs per msg | mosquitto CPU µs per msg | lost | late |\n|---|{}---|---|---|---|---|---|---|---|---|---|\n",
            self.scenario,
            self.rounds.len(),
            if at_half {
                " router maximum per s | offered per s |"
            } else {
                ""
            },
            if at_half { "---|---|" } else { "" },
        );
        for (index, round) in self.rounds.iter().enumerate() {
            let offered = match round.router_maximum_per_s {
                Some(maximum) => format!(" {maximum:.0} | {} |", round.offered_per_s),
                None if at_half => " | |".to_owned(),
                None => String::new(),
            };
            out.push_str(&format!(
                "| {} |{offered} {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {} |\n",
                index + 1,
                round.router_per_s,
                round.baseline_per_s,
                round.throughput_ratio,
                round.router_p99_ms,
                round.baseline_p99_ms,
                round.p99_ratio,
                round.router_cpu_us,
                round.baseline_cpu_us,
                round.lost,
                round.late
            ));
        }
        out.push_str(&format!(
            "\nmedian throughput ratio: **{:.2}**, median p99 ratio: **{:.2}**, median router CPU per envelope: **{:.0} µs**\n",
            self.median_throughput_ratio, self.median_p99_ratio, self.median_router_cpu_us
        ));
        out
    }
}

/// The index of the median of `ratios` (the lower middle of an even count): the round whose
/// full table and plot stand for all of them.
pub fn median_index(ratios: &[f64]) -> Option<usize> {
    let mut order: Vec<usize> = (0..ratios.len()).collect();
    order.sort_by(|&a, &b| ratios[a].total_cmp(&ratios[b]));
    order.get(order.len().saturating_sub(1) / 2).copied()
}

/// The median of `values` (the mean of the middle two of an even count); 0 when empty.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::{Round, Rounds, median, median_index};

    fn round(offered_per_s: u64, router_maximum_per_s: Option<f64>) -> Round {
        Round {
            router_per_s: 4000.0,
            baseline_per_s: 4000.0,
            router_p99_ms: 3.0,
            baseline_p99_ms: 2.0,
            throughput_ratio: 1.0,
            p99_ratio: 1.5,
            router_cpu_us: 100.0,
            baseline_cpu_us: 40.0,
            lost: 0,
            late: 0,
            offered_per_s,
            router_maximum_per_s,
        }
    }

    fn table(rounds: Vec<Round>) -> String {
        Rounds {
            scenario: "embedded".into(),
            rounds,
            median_throughput_ratio: 1.0,
            median_p99_ratio: 1.5,
            median_router_cpu_us: 100.0,
        }
        .markdown()
    }

    #[test]
    fn rounds_at_half_the_maximum_show_what_each_measured_and_offered() {
        let markdown = table(vec![round(4001, Some(8002.4)), round(3900, Some(7800.0))]);
        assert!(
            markdown.contains("| round | router maximum per s | offered per s | router per s |")
        );
        assert!(
            markdown.contains("| 1 | 8002 | 4001 | 4000 |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| 2 | 7800 | 3900 | 4000 |"),
            "{markdown}"
        );
        // Every row has as many cells as the header.
        let cells: Vec<usize> = markdown
            .lines()
            .filter(|line| line.starts_with('|'))
            .map(|line| line.matches('|').count())
            .collect();
        assert!(cells.windows(2).all(|w| w[0] == w[1]), "{markdown}");
    }

    #[test]
    fn other_rounds_keep_their_columns() {
        let markdown = table(vec![round(0, None)]);
        assert!(markdown.contains("| round | router per s |"));
        assert!(markdown.contains("| 1 | 4000 | 4000 |"), "{markdown}");
        assert!(!markdown.contains("maximum"));
    }

    #[test]
    fn the_median_of_an_odd_count_is_its_middle_value() {
        assert_eq!(median([0.3, 0.1, 0.2].into_iter()), 0.2);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_its_middle_two() {
        assert_eq!(median([0.4, 0.1, 0.3, 0.2].into_iter()), 0.25);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn the_standing_round_is_the_one_with_the_median_ratio() {
        assert_eq!(median_index(&[0.30, 0.10, 0.20]), Some(2));
        assert_eq!(median_index(&[0.40, 0.10, 0.30, 0.20]), Some(3));
        assert_eq!(median_index(&[0.5]), Some(0));
        assert_eq!(median_index(&[]), None);
    }
}
