//! The printed result: the machine, the ceilings, one Markdown table row per scenario
//! and step, and one per filter count of the routing scale.

use std::fmt::Write as _;
use std::process::Command;

use super::fake_openwhisk::{CEILING_CLIENTS, Ceiling};
use super::publisher::Pace;
use super::routing::RoutingRow;
use super::settings::Scenario;
use super::step::StepReport;

/// One scenario step as printed.
pub struct Row {
    /// The scenario's key (`b`), by which a spool row finds its twin without the spool.
    pub key: String,
    pub scenario: String,
    pub pace: Pace,
    /// The provider's resident set size before its first step, in bytes.
    pub idle_rss: Option<u64>,
    pub result: Result<StepReport, String>,
    /// What the provider logged during the step, why the next step got a fresh stack.
    pub notes: Vec<String>,
}

/// A line describing the machine: CPUs, toolchain, broker, load.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|line| {
                Some(
                    line.strip_prefix("model name")?
                        .split_once(':')?
                        .1
                        .trim()
                        .to_string(),
                )
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let first_line = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .ok()
            .and_then(|out| {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.lines().next().map(str::to_string)
            })
            .unwrap_or_else(|| format!("{program}: not found"))
    };
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|avg| avg.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}); {}; {}; load average at start {load}",
        first_line("rustc", "-V"),
        first_line(
            &test_support::find_binary("mosquitto").to_string_lossy(),
            "-h"
        ),
    )
}

/// Where the spool scenarios' state directories are, and its file system (`ext4`):
/// on `tmpfs` an fsync costs nothing, and the spool rows would flatter the spool.
pub fn temp_dir() -> String {
    let dir = std::env::temp_dir();
    // df names ext4 as such; `stat -f` calls it ext2/ext3.
    let file_system = Command::new("df")
        .arg("--output=fstype")
        .arg(&dir)
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            Some(text.lines().nth(1)?.trim().to_string())
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown file system".to_string());
    format!("`{}` ({file_system})", dir.display())
}

/// The ceilings of the provider's surroundings, as a Markdown table.
pub fn ceilings(openwhisk: &Ceiling, broker: &StepReport, publishers: usize) -> String {
    let mut table =
        String::from("| ceiling | rate | server CPU s / 10k | details |\n|---|---:|---:|---|\n");
    writeln!(
        table,
        "| fake OpenWhisk | {} fires/s | {:.2} | {CEILING_CLIENTS} concurrent keep-alive reqwest clients in the benchmark process |",
        thousands(openwhisk.fires_per_sec as u64),
        openwhisk.cpu_per_10k,
    )
    .expect("write to a String");
    writeln!(
        table,
        "| publisher + Mosquitto → do-nothing subscriber (QoS 1) | {} msg/s | {} | offered {} msg/s on {publishers} connection(s); lost {}; unacked {}; latency p50 {} / p99 {} ms |",
        thousands(broker.delivered_per_sec as u64),
        optional(broker.cpu_per_10k.map(|cpu| format!("{cpu:.2}"))),
        thousands(broker.offered_per_sec as u64),
        thousands(broker.lost()),
        optional(broker.unacked.map(thousands)),
        optional(broker.latency.as_ref().map(|l| ms(l.p50))),
        optional(broker.latency.as_ref().map(|l| ms(l.p99))),
    )
    .expect("write to a String");
    table
}

/// The scenarios' steps as a Markdown table, then their notes and errors.
pub fn steps(rows: &[Row]) -> String {
    steps_with(rows, "", "", |_| String::new())
}

/// The spool scenarios' steps as [`steps`] prints them, plus fsyncs per second, the
/// spool's size at the end of the step and at its peak, and issue 12's targets on the
/// `max` rows (against `plain`'s rows for a target relative to a scenario without the
/// spool).
pub fn spool_steps(rows: &[Row], plain: &[Row], scenarios: &[Scenario]) -> String {
    steps_with(
        rows,
        " fsyncs/s | spool MB end | spool MB peak | target |",
        "---:|---:|---:|---|",
        |row| {
            let Ok(step) = &row.result else {
                return " | | | |".to_string();
            };
            let spool = step.spool.as_ref();
            format!(
                " {} | {} | {} | {} |",
                optional(
                    spool
                        .and_then(|s| s.fsyncs_per_sec)
                        .map(|n| thousands(n as u64))
                ),
                optional(spool.and_then(|s| s.end_bytes).map(mib)),
                optional(spool.and_then(|s| s.peak_bytes).map(mib)),
                target(row, step, plain, scenarios),
            )
        },
    )
}

/// A table of `rows` whose columns `extra_header` and `extra_align` continue and whose
/// rows `extra_cells` does.
fn steps_with(
    rows: &[Row],
    extra_header: &str,
    extra_align: &str,
    extra_cells: impl Fn(&Row) -> String,
) -> String {
    let mut table = format!(
        "| scenario | step | offered msg/s | delivered msg/s | lost | dup | unacked | msgs/fire \
         | p50 ms | p99 ms | max ms | CPU s / 10k msgs | RSS idle MB | RSS peak MB |{extra_header}\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{extra_align}\n",
    );
    let mut notes = String::new();
    for (index, row) in rows.iter().enumerate() {
        let mark = note(index + 1, row, &mut notes);
        let idle = optional(row.idle_rss.map(mib));
        let cells = match &row.result {
            Ok(step) => {
                let latency = |pick: fn(&super::step::Latency) -> f64| {
                    optional(step.latency.as_ref().map(|l| ms(pick(l))))
                };
                format!(
                    "{} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {idle} | {}",
                    thousands(step.offered_per_sec as u64),
                    thousands(step.delivered_per_sec as u64),
                    thousands(step.lost()),
                    thousands(step.duplicates),
                    optional(step.unacked.map(thousands)),
                    step.readings_per_carrier,
                    latency(|l| l.p50),
                    latency(|l| l.p99),
                    latency(|l| l.max),
                    optional(step.cpu_per_10k.map(|cpu| format!("{cpu:.2}"))),
                    mib(step.peak_rss),
                )
            }
            Err(_) => format!("failed | | | | | | | | | | {idle} |"),
        };
        writeln!(
            table,
            "| {} | {}{mark} | {cells} |{}",
            row.scenario,
            row.pace,
            extra_cells(row)
        )
        .expect("write to a String");
    }
    with_notes(table, &notes)
}

/// Issue 12's targets for a spool row's `max` step, each `≥ 22,364 (½ of b): met` or
/// `not met`; nothing for a fixed rate, which only tells whether the provider keeps up.
fn target(row: &Row, step: &StepReport, plain: &[Row], scenarios: &[Scenario]) -> String {
    let Some(scenario) = scenarios.iter().find(|scenario| scenario.key == row.key) else {
        return String::new();
    };
    if !matches!(row.pace, Pace::Flood) {
        return String::new();
    }
    let verdict = |floor: f64, why: &str| {
        let met = if step.delivered_per_sec >= floor {
            "met"
        } else {
            "not met"
        };
        format!("≥ {} ({why}): {met}", thousands(floor as u64))
    };
    let mut targets = Vec::new();
    if let Some(twin) = &scenario.targets.half_of {
        let twin_rate = plain
            .iter()
            .filter(|other| &other.key == twin && matches!(other.pace, Pace::Flood))
            .find_map(|other| Some(other.result.as_ref().ok()?.delivered_per_sec));
        targets.push(match twin_rate {
            Some(rate) => verdict(rate / 2.0, &format!("½ of {twin}")),
            None => format!("≥ ½ of {twin} ({twin} at max not run)"),
        });
    }
    if let Some(floor) = scenario.targets.at_least {
        targets.push(verdict(f64::from(floor), "batched"));
    }
    targets.join("; ")
}

/// The routing-scale rows as a Markdown table, each compared with the rows of the
/// smallest filter count (their mean, if it ran more than once), then notes and errors.
pub fn routing(rows: &[RoutingRow]) -> String {
    let base_filters = rows.iter().map(|r| r.filters).min().unwrap_or(1);
    let base: Vec<&Row> = rows
        .iter()
        .filter(|r| r.filters == base_filters)
        .map(|r| &r.row)
        .collect();
    let mean = |values: Vec<f64>| {
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let base_cpu = mean(
        base.iter()
            .filter_map(|row| row.result.as_ref().ok()?.cpu_per_10k)
            .collect(),
    );
    let base_rss = mean(
        base.iter()
            .filter_map(|row| Some(row.idle_rss? as f64))
            .collect(),
    );
    let mut table = format!(
        "| filters | offered msg/s | delivered msg/s | lost | p50 ms | p99 ms \
         | CPU s / 10k msgs | CPU vs {base_filters} | RSS idle MB | RSS idle growth B / filter |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut notes = String::new();
    for (index, RoutingRow { filters, row }) in rows.iter().enumerate() {
        let mark = note(index + 1, row, &mut notes);
        let growth = match (row.idle_rss, base_rss) {
            (Some(rss), Some(base)) if *filters > base_filters => Some(format!(
                "{:.0}",
                (rss as f64 - base) / (filters - base_filters) as f64
            )),
            _ => None,
        };
        let idle = format!("{} | {}", optional(row.idle_rss.map(mib)), optional(growth));
        let cells = match &row.result {
            Ok(step) => format!(
                "{} | {} | {} | {} | {} | {} | {} | {idle}",
                thousands(step.offered_per_sec as u64),
                thousands(step.delivered_per_sec as u64),
                thousands(step.lost()),
                optional(step.latency.as_ref().map(|l| ms(l.p50))),
                optional(step.latency.as_ref().map(|l| ms(l.p99))),
                optional(step.cpu_per_10k.map(|cpu| format!("{cpu:.3}"))),
                optional(
                    step.cpu_per_10k
                        .zip(base_cpu)
                        .map(|(cpu, base)| format!("{:.2}×", cpu / base))
                ),
            ),
            Err(_) => format!("failed | | | | | | | {idle}"),
        };
        writeln!(table, "| {}{mark} | {cells} |", thousands(*filters as u64))
            .expect("write to a String");
    }
    with_notes(table, &notes)
}

/// Appends `row`'s notes and error to `notes`, numbered `number`; returns the mark its
/// table cell gets (` (3)`, or nothing).
fn note(number: usize, row: &Row, notes: &mut String) -> String {
    let mut mark = String::new();
    for note in row.notes.iter().chain(row.result.as_ref().err()) {
        mark = format!(" ({number})");
        writeln!(notes, "- ({number}) {note}").expect("write to a String");
    }
    mark
}

/// `table`, then a blank line and `notes` if there are any.
fn with_notes(mut table: String, notes: &str) -> String {
    if !notes.is_empty() {
        table.push('\n');
        table.push_str(notes);
    }
    table
}

/// `12345678` as `12,345,678`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// Milliseconds with as many decimals as are meaningful.
fn ms(value: f64) -> String {
    match value {
        v if v < 10.0 => format!("{v:.2}"),
        v if v < 100.0 => format!("{v:.1}"),
        v => thousands(v.round() as u64),
    }
}

/// Bytes as MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn optional(cell: Option<String>) -> String {
    cell.unwrap_or_else(|| "–".to_string())
}
