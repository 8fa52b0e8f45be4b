//! `BenchReport`: every figure one bench run measured, and its Markdown rendering (the
//! text `weathervane bench` prints and BENCHMARKS.md collects), ratios and targets first.

use std::fmt::Write as _;

use super::{ApiRun, BenchArgs, Ceiling, HerdRun, PipelineRun, RecoveryRun};
use crate::verify::Verdict;

/// The machine the bench ran on, and when and how it was asked for.
#[derive(Clone, Debug)]
pub struct Machine {
    /// `YYYY-MM-DD`.
    pub date: String,
    pub cores: usize,
    pub memory_gib: f64,
    /// The arguments after `weathervane bench`.
    pub command: String,
}

impl Machine {
    pub fn now() -> Self {
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .next()?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
        Self {
            date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib,
            command: std::env::args().skip(2).collect::<Vec<_>>().join(" "),
        }
    }
}

/// The recovery phase: one hour, a Redis outage and an InfluxDB outage.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// Seconds InfluxDB alone needs to store the hour on a fresh server.
    pub influx_alone_s: f64,
    pub redis: RecoveryRun,
    pub influx: RecoveryRun,
}

/// The memory phase: a streamer buffering with Redis down from the start.
#[derive(Clone, Debug)]
pub struct Memory {
    pub rss_one_kb: u64,
    pub rss_three_kb: u64,
    pub csv_bytes_per_row: f64,
    pub bytes_per_row: f64,
}

/// Everything one bench run measured.
#[derive(Debug)]
pub struct BenchReport {
    pub machine: Machine,
    pub args: BenchArgs,
    pub ceilings: Vec<Ceiling>,
    /// The fastest ceiling.
    pub best: Ceiling,
    pub pipeline: PipelineRun,
    pub api: ApiRun,
    pub herd: HerdRun,
    pub recovery: Recovery,
    pub memory: Memory,
    /// Per station multiplier, its pipeline run.
    pub scale: Vec<(u32, PipelineRun)>,
}

/// `2/2 hours correct, 240 of 240 rows`.
pub(super) fn verified(verdict: &Verdict) -> String {
    format!(
        "{}/{} hours correct, {} of {} rows",
        verdict.hours_correct, verdict.hours, verdict.rows_stored, verdict.rows_expected
    )
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

impl BenchReport {
    /// The report in Markdown: throughput, API, reports, recovery, memory, scale.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        self.write(&mut out)
            .expect("writing to a String cannot fail");
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        let Machine {
            date,
            cores,
            memory_gib,
            command,
        } = &self.machine;
        writeln!(out, "## {date} — {cores} cores, {memory_gib:.0} GiB")?;
        writeln!(out, "\n`weathervane bench {command}`\n")?;
        self.write_throughput(out)?;
        self.write_api(out)?;
        self.write_herd(out)?;
        self.write_reports(out)?;
        self.write_recovery(out)?;
        self.write_memory(out)?;
        self.write_scale(out)
    }

    fn write_throughput(&self, out: &mut String) -> std::fmt::Result {
        let (args, run, best) = (&self.args, &self.pipeline, &self.best);
        let pipeline_rps = run.rows_per_s();
        let per_million = |cpu: f64| cpu / (run.rows as f64 / 1e6);
        let ours: f64 = ["streamer", "ingester", "processor"]
            .iter()
            .filter_map(|n| run.usage.get(*n))
            .map(|u| u.cpu)
            .sum();
        let influxd_cpu = run.usage.get("influxd").map_or(0.0, |u| u.cpu);
        writeln!(
            out,
            "### Throughput ({} rows: {} stations x {} hours)\n",
            run.rows, args.stations, args.hours
        )?;
        writeln!(out, "| measure | figure | target |\n|---|---|---|")?;
        writeln!(
            out,
            "| pipeline / ceiling rows/s | **{:.2}** ({pipeline_rps:.0} / {:.0}) | >= 0.9 |",
            pipeline_rps / best.rows_per_s,
            best.rows_per_s
        )?;
        writeln!(
            out,
            "| WeatherVane CPU / influxd CPU | **{:.3}** ({ours:.1} s / {influxd_cpu:.1} s) | <= 0.1 |",
            ours / influxd_cpu.max(1e-9)
        )?;
        for ceiling in &self.ceilings {
            writeln!(
                out,
                "| ceiling, {} writers | {:.0} rows/s (influxd {:.1} CPU s) | |",
                ceiling.concurrency, ceiling.rows_per_s, ceiling.influxd_cpu
            )?;
        }
        writeln!(
            out,
            "| pipeline | {pipeline_rps:.0} rows/s, {:.1} s; {} | |",
            run.seconds,
            verified(&run.verdict)
        )?;
        for (name, usage) in &run.usage {
            writeln!(
                out,
                "| {name} | {:.2} CPU s per million rows, peak RSS {:.0} MiB | |",
                per_million(usage.cpu),
                usage.peak_rss_kb as f64 / 1024.0
            )?;
        }
        Ok(())
    }

    fn write_herd(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "\n### The api herd (`/avg`, {} connections, {} s each, `wrk` with one thread)\n",
            self.args.connections, self.args.api_seconds
        )?;
        writeln!(
            out,
            "| target | requests/s | p50 | p99 |\n|---|---|---|---|"
        )?;
        for (name, load) in [
            ("one replica", &self.herd.one),
            ("three replicas behind HAProxy", &self.herd.three),
            ("one replica, InfluxDB killed", &self.herd.one_influx_down),
        ] {
            writeln!(
                out,
                "| {name} | {:.0} | {:.2} ms | {:.2} ms |",
                load.rps, load.p50_ms, load.p99_ms
            )?;
        }
        Ok(())
    }

    fn write_api(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "\n### API (`wrk`, {} connections, {} s per endpoint and side; then {} answers checked against the input, all correct)\n",
            self.args.connections, self.args.api_seconds, self.api.checked
        )?;
        writeln!(
            out,
            "| endpoint | API / InfluxDB rps | API rps, p50, p99 | InfluxDB /query rps, p50, p99 | target |\n|---|---|---|---|---|"
        )?;
        for (name, api_load, direct) in &self.api.loads {
            writeln!(
                out,
                "| {name} | **{:.1}x** | {:.0}, {:.2} ms, **{:.2} ms** | {:.0}, {:.2} ms, {:.2} ms | p99 < 5 ms, >= 10x |",
                api_load.rps / direct.rps,
                api_load.rps,
                api_load.p50_ms,
                api_load.p99_ms,
                direct.rps,
                direct.p50_ms,
                direct.p99_ms
            )?;
        }
        Ok(())
    }

    fn write_reports(&self, out: &mut String) -> std::fmt::Result {
        let run = &self.pipeline;
        let mut report_ms = run.report_ms.clone();
        writeln!(
            out,
            "\n### Reports\n\n| measure | figure | target |\n|---|---|---|"
        )?;
        writeln!(
            out,
            "| hour stored → reports stored, InfluxDB writing nothing else (Redis recovery run) | **{} ms** | < 1000 ms |",
            self.recovery.redis.report_ms
        )?;
        writeln!(
            out,
            "| the same in the pipeline run, InfluxDB writing the next hours meanwhile: median / max | {} ms / {} ms ({} hours) | |",
            median(&mut report_ms),
            report_ms.iter().max().copied().unwrap_or_default(),
            run.verdict.hours
        )?;
        writeln!(
            out,
            "| InfluxDB queries per hour | **{:.1}** (plus one write) | <= 10 |",
            run.queries / run.verdict.hours.max(1) as f64
        )
    }

    fn write_recovery(&self, out: &mut String) -> std::fmt::Result {
        let Recovery {
            influx_alone_s,
            redis,
            influx,
        } = &self.recovery;
        writeln!(
            out,
            "\n### Recovery ({} s outage during a {}-row hour; InfluxDB alone needs {influx_alone_s:.2} s to store it on a fresh server with {} writers)\n",
            self.args.outage, self.args.stations, self.best.concurrency
        )?;
        writeln!(
            out,
            "| outage | back → hour reported | beyond InfluxDB alone | target |\n|---|---|---|---|"
        )?;
        writeln!(
            out,
            "| Redis | {:.2} s | **{:.2} s** | <= 1.5 s |",
            redis.seconds,
            redis.seconds - influx_alone_s
        )?;
        writeln!(
            out,
            "| InfluxDB | {:.2} s | **{:.2} s** | <= 1.5 s |",
            influx.seconds,
            influx.seconds - influx_alone_s
        )
    }

    fn write_memory(&self, out: &mut String) -> std::fmt::Result {
        let memory = &self.memory;
        writeln!(
            out,
            "\n### Memory (streamer, Redis down from the start)\n\n| measure | figure | target |\n|---|---|---|"
        )?;
        writeln!(
            out,
            "| bytes per buffered row / CSV bytes per row | **{:.2}** ({:.0} / {:.0}) | <= 2 |",
            memory.bytes_per_row / memory.csv_bytes_per_row,
            memory.bytes_per_row,
            memory.csv_bytes_per_row
        )?;
        writeln!(
            out,
            "| peak RSS buffering 1 hour / 3 hours of a 3-hour input | {:.0} MiB / {:.0} MiB | |",
            memory.rss_one_kb as f64 / 1024.0,
            memory.rss_three_kb as f64 / 1024.0
        )
    }

    fn write_scale(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "\n### Scale ({} hours per run)\n\n| stations | rows/s | vs 1x | influxd CPU s per million rows | peak RSS streamer / ingester / processor |\n|---|---|---|---|---|",
            self.args.scale_hours
        )?;
        let mut first = None;
        for (factor, run) in &self.scale {
            let stations = self.args.stations * factor;
            let rps = run.rows_per_s();
            let base = *first.get_or_insert(rps);
            let rss = |name: &str| {
                run.usage
                    .get(name)
                    .map_or(0.0, |u| u.peak_rss_kb as f64 / 1024.0)
            };
            writeln!(
                out,
                "| {factor}x ({stations}) | {rps:.0} | **{:.2}** | {:.0} | {:.0} / {:.0} / {:.0} MiB |",
                rps / base,
                run.usage
                    .get("influxd")
                    .map_or(0.0, |u| u.cpu / (run.rows as f64 / 1e6)),
                rss("streamer"),
                rss("ingester"),
                rss("processor")
            )?;
        }
        Ok(())
    }
}
