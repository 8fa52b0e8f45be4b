//! The deterministic generator of hourly weather-station rows (`weathervane gen`).
//!
//! The output is a CSV file in the layout of the WeatherAPI-style input (37 columns, see
//! [`HEADER`]): one row per station per hour, ordered by hour, then by station (stations
//! are ordered by zip code). Everything depends only on the seed, the number of stations,
//! the number of days and the first day; rows are streamed out hour by hour, so memory
//! depends on the number of stations only.
//!
//! Stations: every station has a unique zip code string. Up to 90,000 stations the zip is
//! always exactly 5 digits (leading zeros kept), drawn from its state's real 3-digit prefix
//! ranges and, when a state has more stations than its ranges hold, from unused 5-digit
//! codes elsewhere. Above 90,000 stations a state that runs out of codes reuses them with a
//! `-NNNN` suffix (`"02134-0001"`). States are weighted by rough population and each one
//! gets at least 2 stations when there are at least twice as many stations as states.
//!
//! Weather: each station has its own `ChaCha8Rng` (seeded from the seed and its index)
//! driving slow random processes (temperature, humidity, pressure, cloud, wind anomalies,
//! rain spells) on top of a climate by latitude and season, a diurnal cycle in local solar
//! time (longitude / 15) and a per-state shared weather anomaly. Derived columns are
//! computed from the *printed* (rounded) values, so every pair such as `temp_c`/`temp_f`
//! is consistent to the printed precision.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chrono::{Datelike, NaiveDate, Timelike};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weathervane_core::progress::{self, ProgressBar};

/// Arguments of `weathervane gen`.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Number of weather stations (one row per station per hour), at least 1.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    pub stations: u32,
    /// Number of days, at least 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
    /// Stop after this many hours in all (default: every hour of every day).
    #[arg(long)]
    pub hours: Option<u32>,
    /// Seed: the same seed and sizes always give the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First day (UTC).
    #[arg(long, default_value = "2023-09-19")]
    pub start: NaiveDate,
    /// Output CSV file ("-" for standard output).
    #[arg(long)]
    pub out: PathBuf,
}

/// What [`run`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenSummary {
    /// Data rows written (the header not counted).
    pub rows: u64,
    /// Number of stations.
    pub stations: u32,
    /// Number of distinct states that got at least one station.
    pub states: usize,
}

/// The header row, in output order: the input layout WeatherVane reads.
pub use weathervane_core::row::CSV_COLUMNS as HEADER;

/// Above this many stations, zip codes may carry a `-NNNN` suffix.
pub const MAX_PLAIN_ZIP_STATIONS: u32 = 90_000;

/// Writes the file (or standard output for `-`) described by `args`. `None` when
/// standard output was closed before the end (`gen --out - | head`): the reader has what
/// it wanted, which is no error.
pub fn run(args: &GenArgs) -> Result<Option<GenSummary>> {
    // On a terminal, a bar of rows written (hidden otherwise: progress::bar).
    let progress = progress::bar("gen", rows_of(args), "rows");
    let summary = if args.out.as_os_str() == "-" {
        let stdout = io::stdout();
        let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
        let written = write_rows(args, &mut out, &progress)
            .and_then(|summary| out.flush().map(|()| summary).map_err(Into::into));
        match written {
            Ok(summary) => summary,
            Err(error) if is_broken_pipe(&error) => return Ok(None),
            Err(error) => return Err(error.context("writing to standard output")),
        }
    } else {
        let file =
            File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let summary = write_rows(args, &mut out, &progress)
            .with_context(|| format!("writing {}", args.out.display()))?;
        out.flush()
            .with_context(|| format!("writing {}", args.out.display()))?;
        summary
    };
    // The log line below says what was written.
    progress.finish_and_clear();
    tracing::info!(
        rows = summary.rows,
        stations = summary.stations,
        states = summary.states,
        out = %args.out.display(),
        "generated weather rows"
    );
    Ok(Some(summary))
}

/// Whether `error` comes from writing to a pipe whose reader has gone.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Writes the CSV (header and rows) for `args` to `out`; `args.out` is ignored. Buffer
/// `out` yourself (rows are written one `write_all` each).
pub fn write_csv<W: Write>(args: &GenArgs, out: W) -> Result<GenSummary> {
    write_rows(args, out, &ProgressBar::hidden())
}

/// How many rows `args` asks for.
fn rows_of(args: &GenArgs) -> u64 {
    let hours = (u64::from(args.days) * 24).min(args.hours.map_or(u64::MAX, u64::from));
    hours.saturating_mul(u64::from(args.stations))
}

/// [`write_csv`], counting the rows written on `progress` hour by hour.
fn write_rows<W: Write>(args: &GenArgs, mut out: W, progress: &ProgressBar) -> Result<GenSummary> {
    let sites = layout(args.seed, args.stations)?;
    let states = {
        let mut seen = [false; STATES.len()];
        sites.iter().for_each(|s| seen[s.state] = true);
        seen.iter().filter(|&&b| b).count()
    };
    let mut stations: Vec<Station> = sites
        .iter()
        .enumerate()
        .map(|(i, site)| Station::new(site, sub_seed(args.seed, DOMAIN_STATION, i as u64)))
        .collect();
    drop(sites);
    let mut regions: Vec<Region> = (0..STATES.len())
        .map(|i| Region::new(sub_seed(args.seed, DOMAIN_REGION, i as u64)))
        .collect();

    let mut header = HEADER.join(",");
    header.push('\n');
    out.write_all(header.as_bytes())?;

    let start = args.start.and_hms_opt(0, 0, 0).expect("midnight exists");
    let hours = (u64::from(args.days) * 24).min(args.hours.map_or(u64::MAX, u64::from));
    let mut line = Vec::with_capacity(512);
    let mut time = Vec::with_capacity(16);
    let mut rows = 0u64;
    for h in 0..hours {
        let Some(at) = i64::try_from(h)
            .ok()
            .and_then(chrono::TimeDelta::try_hours)
            .and_then(|d| start.checked_add_signed(d))
        else {
            bail!(
                "{} days from {} is past the end of the calendar",
                args.days,
                args.start
            );
        };
        time.clear();
        write!(time, "{}", at.format("%Y-%m-%d %H:%M"))?;
        let utc_hour = f64::from(at.hour());
        let doy = f64::from(at.ordinal0()) + utc_hour / 24.0;
        let hour = Hour {
            time: &time,
            utc_hour,
            season: (std::f64::consts::TAU * (doy - 200.0) / 365.25).cos(),
            sun: 0.5 + 0.5 * (std::f64::consts::TAU * (doy - 172.0) / 365.25).cos(),
        };
        for region in &mut regions {
            region.step();
        }
        for station in &mut stations {
            line.clear();
            station.row(&hour, &regions[station.state], &mut line);
            out.write_all(&line)?;
        }
        rows += stations.len() as u64;
        progress.inc(stations.len() as u64);
    }
    Ok(GenSummary {
        rows,
        stations: args.stations,
        states,
    })
}

// ---------------------------------------------------------------------------------------
// States

/// A US state or DC (all 51 that the reports cover): rough population weight, a lat/lon box, its 3-digit zip prefix ranges and
/// a few towns, plus climate tweaks.
struct StateInfo {
    code: &'static str,
    /// Population in units of 100,000 (rough).
    weight: u64,
    lat: (f64, f64),
    lon: (f64, f64),
    /// Inclusive 3-digit zip prefix ranges (disjoint across states).
    zips: &'static [(u32, u32)],
    towns: &'static [&'static str],
    /// Added to the annual mean temperature (deg C).
    temp_bias: f64,
    /// Added to the mean relative humidity (negative = dry climate).
    humid_bias: f64,
    /// Scales the seasonal amplitude (coastal climates < 1).
    amp_scale: f64,
}

macro_rules! st {
    ($code:literal, $w:literal, ($la0:literal, $la1:literal), ($lo0:literal, $lo1:literal),
     $zips:expr, $towns:expr, $tb:literal, $hb:literal, $amp:literal) => {
        StateInfo {
            code: $code,
            weight: $w,
            lat: ($la0, $la1),
            lon: ($lo0, $lo1),
            zips: $zips,
            towns: $towns,
            temp_bias: $tb,
            humid_bias: $hb,
            amp_scale: $amp,
        }
    };
}

#[rustfmt::skip]
const STATES: [StateInfo; 51] = [
    st!("CA", 390, (32.6, 41.9), (-124.2, -114.6), &[(900, 961)], &["Fresno", "Sacramento", "Redding", "Bakersfield"], 2.0, -10.0, 0.55),
    st!("TX", 300, (26.0, 36.4), (-106.5, -93.6), &[(750, 799), (885, 885)], &["Austin", "Amarillo", "Lubbock", "Tyler"], 1.5, -5.0, 1.0),
    st!("FL", 226, (25.2, 30.9), (-87.5, -80.1), &[(320, 349)], &["Tampa", "Ocala", "Gainesville", "Naples"], 1.5, 12.0, 0.8),
    st!("NY", 196, (40.5, 45.0), (-79.7, -72.0), &[(100, 149)], &["Albany", "Buffalo", "Ithaca", "Utica"], 0.0, 0.0, 1.0),
    st!("PA", 130, (39.7, 42.2), (-80.5, -74.8), &[(150, 196)], &["Erie", "Scranton", "Altoona", "Lancaster"], 0.0, 0.0, 1.0),
    st!("IL", 125, (37.0, 42.5), (-91.4, -87.6), &[(600, 629)], &["Peoria", "Rockford", "Springfield", "Champaign"], 0.0, 0.0, 1.0),
    st!("OH", 118, (38.5, 41.9), (-84.8, -80.6), &[(430, 459)], &["Dayton", "Toledo", "Akron", "Columbus"], 0.0, 0.0, 1.0),
    st!("GA", 110, (30.4, 35.0), (-85.6, -81.0), &[(300, 319), (398, 399)], &["Macon", "Athens", "Augusta", "Savannah"], 0.5, 6.0, 1.0),
    st!("NC", 108, (33.9, 36.6), (-84.3, -75.5), &[(270, 289)], &["Raleigh", "Asheville", "Durham", "Wilmington"], 0.0, 4.0, 1.0),
    st!("MI", 100, (41.7, 47.4), (-90.4, -82.4), &[(480, 499)], &["Lansing", "Flint", "Marquette", "Saginaw"], 0.0, 2.0, 1.0),
    st!("NJ", 93, (38.9, 41.4), (-75.6, -73.9), &[(70, 89)], &["Trenton", "Newark", "Camden", "Paterson"], 0.5, 0.0, 0.9),
    st!("VA", 87, (36.5, 39.5), (-83.7, -75.2), &[(201, 201), (220, 246)], &["Roanoke", "Norfolk", "Richmond", "Lynchburg"], 0.0, 2.0, 1.0),
    st!("WA", 78, (45.5, 49.0), (-124.7, -116.9), &[(980, 994)], &["Spokane", "Tacoma", "Yakima", "Olympia"], 1.0, 5.0, 0.6),
    st!("AZ", 74, (31.3, 37.0), (-114.8, -109.0), &[(850, 865)], &["Tucson", "Phoenix", "Flagstaff", "Yuma"], 6.0, -35.0, 1.0),
    st!("TN", 71, (35.0, 36.7), (-90.3, -81.6), &[(370, 385)], &["Nashville", "Memphis", "Knoxville", "Jackson"], 0.0, 3.0, 1.0),
    st!("MA", 70, (41.2, 42.9), (-73.5, -69.9), &[(10, 27), (55, 55)], &["Boston", "Worcester", "Lowell", "Springfield"], 0.0, 0.0, 0.9),
    st!("IN", 68, (37.8, 41.8), (-88.1, -84.8), &[(460, 479)], &["Gary", "Muncie", "Evansville", "Bloomington"], 0.0, 0.0, 1.0),
    st!("MO", 62, (36.0, 40.6), (-95.8, -89.1), &[(630, 658)], &["Joplin", "Columbia", "Springfield", "Hannibal"], 0.0, 0.0, 1.0),
    st!("MD", 62, (37.9, 39.7), (-79.5, -75.0), &[(206, 219)], &["Baltimore", "Frederick", "Salisbury", "Annapolis"], 0.5, 2.0, 0.95),
    st!("WI", 59, (42.5, 47.1), (-92.9, -86.8), &[(530, 549)], &["Madison", "Green Bay", "Eau Claire", "Wausau"], 0.0, 2.0, 1.0),
    st!("CO", 59, (37.0, 41.0), (-109.1, -102.0), &[(800, 816)], &["Denver", "Pueblo", "Boulder", "Durango"], -3.0, -20.0, 1.0),
    st!("MN", 57, (43.5, 49.4), (-97.2, -89.5), &[(550, 567)], &["Duluth", "Rochester", "Bemidji", "Mankato"], 0.0, 2.0, 1.0),
    st!("SC", 54, (32.0, 35.2), (-83.4, -78.5), &[(290, 299)], &["Columbia", "Greenville", "Florence", "Aiken"], 0.5, 8.0, 1.0),
    st!("AL", 51, (30.2, 35.0), (-88.5, -84.9), &[(350, 369)], &["Mobile", "Huntsville", "Dothan", "Selma"], 0.5, 8.0, 1.0),
    st!("LA", 46, (29.0, 33.0), (-94.0, -89.0), &[(700, 714)], &["Shreveport", "Monroe", "Lafayette", "Houma"], 1.0, 12.0, 0.9),
    st!("KY", 45, (36.5, 39.1), (-89.6, -81.9), &[(400, 427)], &["Louisville", "Lexington", "Paducah", "Frankfort"], 0.0, 2.0, 1.0),
    st!("OR", 42, (42.0, 46.3), (-124.6, -116.5), &[(970, 979)], &["Eugene", "Bend", "Salem", "Medford"], 1.0, 5.0, 0.6),
    st!("OK", 40, (33.6, 37.0), (-103.0, -94.4), &[(730, 749)], &["Tulsa", "Norman", "Lawton", "Enid"], 0.5, -5.0, 1.0),
    st!("CT", 36, (41.0, 42.0), (-73.7, -71.8), &[(60, 69)], &["Hartford", "New Haven", "Stamford", "Norwich"], 0.0, 0.0, 0.9),
    st!("UT", 34, (37.0, 42.0), (-114.0, -109.0), &[(840, 847)], &["Provo", "Ogden", "Moab", "Logan"], -2.0, -25.0, 1.0),
    st!("NV", 32, (35.0, 42.0), (-120.0, -114.0), &[(889, 898)], &["Reno", "Elko", "Ely", "Henderson"], 2.0, -35.0, 1.0),
    st!("IA", 32, (40.4, 43.5), (-96.6, -90.1), &[(500, 528)], &["Des Moines", "Cedar Rapids", "Davenport", "Sioux City"], 0.0, 0.0, 1.0),
    st!("AR", 30, (33.0, 36.5), (-94.6, -89.6), &[(716, 729)], &["Little Rock", "Fayetteville", "Jonesboro", "Fort Smith"], 0.5, 6.0, 1.0),
    st!("KS", 29, (37.0, 40.0), (-102.05, -94.6), &[(660, 679)], &["Wichita", "Topeka", "Salina", "Dodge City"], 0.5, -5.0, 1.0),
    st!("MS", 29, (30.2, 35.0), (-91.6, -88.1), &[(386, 397)], &["Jackson", "Gulfport", "Hattiesburg", "Tupelo"], 1.0, 10.0, 1.0),
    st!("NM", 21, (31.3, 37.0), (-109.0, -103.0), &[(870, 884)], &["Taos", "Gallup", "Roswell", "Santa Fe"], 0.0, -25.0, 1.0),
    st!("NE", 20, (40.0, 43.0), (-104.05, -95.3), &[(680, 693)], &["Omaha", "Lincoln", "Kearney", "Scottsbluff"], 0.0, -3.0, 1.0),
    st!("ID", 19, (42.0, 49.0), (-117.2, -111.0), &[(832, 838)], &["Boise", "Pocatello", "Idaho Falls", "Twin Falls"], -1.0, -15.0, 1.0),
    st!("WV", 18, (37.2, 40.6), (-82.6, -77.7), &[(247, 268)], &["Charleston", "Morgantown", "Huntington", "Wheeling"], -1.0, 3.0, 1.0),
    st!("ME", 14, (43.1, 47.4), (-71.0, -67.0), &[(39, 49)], &["Portland", "Bangor", "Augusta", "Presque Isle"], 0.0, 2.0, 0.95),
    st!("HI", 14, (19.0, 22.2), (-160.2, -154.8), &[(967, 968)], &["Hilo", "Kona", "Lihue", "Kahului"], 0.5, 8.0, 0.35),
    st!("NH", 14, (42.7, 45.3), (-72.55, -70.6), &[(30, 38)], &["Concord", "Manchester", "Nashua", "Keene"], -0.5, 2.0, 1.0),
    st!("MT", 11, (44.4, 49.0), (-116.0, -104.0), &[(590, 599)], &["Billings", "Missoula", "Helena", "Bozeman"], -1.0, -10.0, 1.0),
    st!("RI", 11, (41.15, 42.0), (-71.9, -71.1), &[(28, 29)], &["Providence", "Newport", "Warwick", "Westerly"], 0.5, 2.0, 0.85),
    st!("DE", 10, (38.45, 39.84), (-75.79, -75.05), &[(197, 199)], &["Wilmington", "Dover", "Newark", "Lewes"], 0.5, 2.0, 0.9),
    st!("SD", 9, (42.5, 45.9), (-104.05, -96.45), &[(570, 577)], &["Sioux Falls", "Rapid City", "Pierre", "Aberdeen"], -0.5, -5.0, 1.0),
    st!("ND", 8, (45.9, 49.0), (-104.0, -96.6), &[(580, 588)], &["Fargo", "Minot", "Bismarck", "Williston"], 0.0, -3.0, 1.0),
    st!("AK", 7, (58.0, 68.0), (-162.0, -135.0), &[(995, 999)], &["Anchorage", "Fairbanks", "Nome", "Juneau"], 3.0, 5.0, 0.9),
    st!("DC", 7, (38.8, 39.0), (-77.12, -76.91), &[(200, 200), (202, 205)], &["Georgetown", "Anacostia", "Brookland", "Capitol Hill"], 0.5, 2.0, 0.95),
    st!("VT", 6, (42.7, 45.0), (-73.4, -71.5), &[(50, 54), (56, 59)], &["Burlington", "Rutland", "Barre", "Stowe"], 0.0, 2.0, 1.0),
    st!("WY", 6, (41.0, 45.0), (-111.0, -104.1), &[(820, 831)], &["Casper", "Cheyenne", "Laramie", "Cody"], -3.0, -15.0, 1.0),
];

impl StateInfo {
    /// How many 5-digit zip codes the state's prefix ranges hold.
    fn zip_capacity(&self) -> u64 {
        self.zips
            .iter()
            .map(|&(a, b)| u64::from(b - a + 1) * 100)
            .sum()
    }

    /// The `k`-th 5-digit zip code (as a number) of the state's ranges, `k < capacity`.
    fn zip_at(&self, mut k: u64) -> u32 {
        for &(a, b) in self.zips {
            let size = u64::from(b - a + 1) * 100;
            if k < size {
                return a * 100 + k as u32;
            }
            k -= size;
        }
        unreachable!("zip index out of range")
    }
}

/// Stations per state: at least 2 each when there are at least 2 x states stations (else
/// at least 1 each when there are enough), the rest by population (largest remainder).
fn allocate(stations: u32) -> [u64; STATES.len()] {
    let n = STATES.len() as u64;
    let total = u64::from(stations);
    let base = if total >= 2 * n {
        2
    } else if total >= n {
        1
    } else {
        0
    };
    let rest = total - base * n;
    let weights: u64 = STATES.iter().map(|s| s.weight).sum();
    let mut counts = [base; STATES.len()];
    let mut remainders: Vec<(u64, usize)> = Vec::with_capacity(STATES.len());
    let mut given = 0;
    for (i, s) in STATES.iter().enumerate() {
        let quota = rest * s.weight;
        counts[i] += quota / weights;
        given += quota / weights;
        remainders.push((quota % weights, i));
    }
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take((rest - given) as usize) {
        counts[i] += 1;
    }
    counts
}

// ---------------------------------------------------------------------------------------
// Station layout

/// Where a station is and what it is called.
#[derive(Debug, Clone)]
struct Site {
    zip: String,
    state: usize,
    name: String,
    /// Rounded to 2 decimals, as printed.
    lat: f64,
    lon: f64,
}

/// `n` distinct indices in `0..range` (`n <= range`), ascending and spread: one per
/// stratum of equal width.
fn spread_pick(rng: &mut ChaCha8Rng, range: u64, n: u64) -> impl Iterator<Item = u64> + '_ {
    debug_assert!(n <= range);
    (0..n).map(move |i| {
        let lo = i * range / n;
        let hi = (i + 1) * range / n;
        lo + rng.random_range(0..hi - lo)
    })
}

/// The stations for `stations` and `seed`, ordered by zip code.
fn layout(seed: u64, stations: u32) -> Result<Vec<Site>> {
    let counts = allocate(stations);
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(seed, DOMAIN_LAYOUT, 0));
    let mut zips: Vec<(String, usize)> = Vec::with_capacity(stations as usize);
    if stations <= MAX_PLAIN_ZIP_STATIONS {
        // Plain 5-digit codes: each state's own ranges first, overflow from unused codes.
        let mut natural = vec![false; 100_000];
        let mut taken = vec![false; 100_000];
        for s in &STATES {
            for k in 0..s.zip_capacity() {
                natural[s.zip_at(k) as usize] = true;
            }
        }
        let mut overflow = Vec::new();
        for (i, s) in STATES.iter().enumerate() {
            let own = counts[i].min(s.zip_capacity());
            for k in spread_pick(&mut rng, s.zip_capacity(), own) {
                let zip = s.zip_at(k);
                taken[zip as usize] = true;
                zips.push((format!("{zip:05}"), i));
            }
            overflow.extend(std::iter::repeat_n(i, (counts[i] - own) as usize));
        }
        if !overflow.is_empty() {
            let mut pool: Vec<u32> = (0..100_000).filter(|&z| !natural[z as usize]).collect();
            if pool.len() < overflow.len() {
                pool.extend((0..100_000).filter(|&z| natural[z as usize] && !taken[z as usize]));
            }
            let picks = spread_pick(&mut rng, pool.len() as u64, overflow.len() as u64);
            for (k, state) in picks.zip(overflow) {
                zips.push((format!("{:05}", pool[k as usize]), state));
            }
        }
    } else {
        // Codes repeat per state in rounds; round r > 0 carries the suffix `-rrrr`.
        for (i, s) in STATES.iter().enumerate() {
            let capacity = s.zip_capacity();
            let mut left = counts[i];
            let mut round = 0u64;
            while left > 0 {
                if round > 9999 {
                    bail!("too many stations ({stations}) for unique zip codes");
                }
                let n = left.min(capacity);
                for k in spread_pick(&mut rng, capacity, n) {
                    let zip = s.zip_at(k);
                    zips.push((
                        if round == 0 {
                            format!("{zip:05}")
                        } else {
                            format!("{zip:05}-{round:04}")
                        },
                        i,
                    ));
                }
                left -= n;
                round += 1;
            }
        }
    }
    let mut sites: Vec<Site> = zips
        .into_iter()
        .map(|(zip, state)| {
            let s = &STATES[state];
            let lat = round_to(s.lat.0 + (s.lat.1 - s.lat.0) * rng.random::<f64>(), 2);
            let lon = round_to(s.lon.0 + (s.lon.1 - s.lon.0) * rng.random::<f64>(), 2);
            Site {
                zip,
                state,
                name: String::new(),
                lat,
                lon,
            }
        })
        .collect();
    sites.sort_by(|a, b| a.zip.cmp(&b.zip));
    // Names: "<Town> <n>", towns taken in turn within a state, numbered per town.
    let mut seen = vec![0usize; STATES.len()];
    let mut numbers: Vec<Vec<u32>> = STATES.iter().map(|s| vec![0; s.towns.len()]).collect();
    for site in &mut sites {
        let towns = STATES[site.state].towns;
        let t = seen[site.state] % towns.len();
        seen[site.state] += 1;
        numbers[site.state][t] += 1;
        site.name = format!("{} {}", towns[t], numbers[site.state][t]);
    }
    Ok(sites)
}

// ---------------------------------------------------------------------------------------
// Weather

const DOMAIN_LAYOUT: u64 = 0x4c41_594f_5554_0001;
const DOMAIN_STATION: u64 = 0x5354_4154_494f_4e02;
const DOMAIN_REGION: u64 = 0x5245_4749_4f4e_0003;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seed for the `index`-th generator of a kind (`domain`), from the user's seed.
fn sub_seed(seed: u64, domain: u64, index: u64) -> u64 {
    splitmix64(splitmix64(seed ^ domain) ^ index)
}

/// A cheap, bounded, roughly normal deviate (mean 0, sd 1, within +-3.47): the Irwin-Hall
/// sum of four 16-bit uniforms taken from one `u64`.
fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    let x = rng.next_u64();
    let sum = (x & 0xffff) + ((x >> 16) & 0xffff) + ((x >> 32) & 0xffff) + (x >> 48);
    ((sum as f64 + 2.0) / 65_536.0 - 2.0) * 3f64.sqrt()
}

/// Uniform in `[0, 1)`.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    rng.random::<f64>()
}

/// One step of an AR(1) process with persistence `rho` and stationary sd `sd`.
fn ar1(value: f64, rho: f64, sd: f64, rng: &mut ChaCha8Rng) -> f64 {
    rho * value + sd * (1.0 - rho * rho).sqrt() * gauss(rng)
}

/// Diurnal shape by local solar hour: -1 at 05:30, +1 at 14:30, cosine in between (9 hours
/// up, 15 hours down).
fn diurnal(local_hour: f64) -> f64 {
    use std::f64::consts::PI;
    if (5.5..14.5).contains(&local_hour) {
        -(PI * (local_hour - 5.5) / 9.0).cos()
    } else {
        (PI * (local_hour - 14.5).rem_euclid(24.0) / 15.0).cos()
    }
}

/// The 16-point compass direction of a degree (0..360).
fn compass(degree: u32) -> &'static str {
    const POINTS: [&str; 16] = [
        "N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W", "WNW",
        "NW", "NNW",
    ];
    POINTS[((degree * 100 + 1125) / 2250 % 16) as usize]
}

/// Rounds half away from zero (as `f64::round`, without a libm call on baseline x86-64);
/// saturates outside the `i64` range, NaN gives 0.
#[inline]
fn round_i64(v: f64) -> i64 {
    if v >= 0.0 {
        (v + 0.5) as i64
    } else {
        -((0.5 - v) as i64)
    }
}

#[inline]
fn round(v: f64) -> f64 {
    round_i64(v) as f64
}

/// `v` rounded to `decimals` (0..=3) decimals.
#[inline]
fn round_to(v: f64, decimals: u32) -> f64 {
    let scale = match decimals {
        0 => 1.0,
        1 => 10.0,
        2 => 100.0,
        _ => 1000.0,
    };
    round(v * scale) / scale
}

fn c_to_f(c: f64) -> f64 {
    c * 9.0 / 5.0 + 32.0
}

/// Dew point (deg C) from temperature (deg C) and relative humidity (%), Magnus formula.
fn dewpoint(temp_c: f64, humidity: f64) -> f64 {
    const A: f64 = 17.62;
    const B: f64 = 243.12;
    let gamma = (humidity.max(1.0) / 100.0).ln() + A * temp_c / (B + temp_c);
    (B * gamma / (A - gamma)).min(temp_c)
}

/// NWS wind chill (deg C) for temperature (deg C) and wind (km/h), or the temperature
/// itself outside its domain (above 10 C or under 4.8 km/h).
fn wind_chill(temp_c: f64, wind_kph: f64) -> f64 {
    if temp_c > 10.0 || wind_kph <= 4.8 {
        return temp_c;
    }
    let v = wind_kph.powf(0.16);
    (13.12 + 0.6215 * temp_c - 11.37 * v + 0.3965 * temp_c * v).min(temp_c)
}

/// Rothfusz heat index (deg C), or the temperature itself when not hot and humid.
fn heat_index(temp_c: f64, humidity: f64) -> f64 {
    if temp_c < 26.7 || humidity < 40.0 {
        return temp_c;
    }
    let t = c_to_f(temp_c);
    let r = humidity;
    let hi = -42.379 + 2.049_015_23 * t + 10.143_331_27 * r
        - 0.224_755_54 * t * r
        - 0.006_837_83 * t * t
        - 0.054_817_17 * r * r
        + 0.001_228_74 * t * t * r
        + 0.000_852_82 * t * r * r
        - 0.000_001_99 * t * t * r * r;
    ((hi - 32.0) * 5.0 / 9.0).clamp(temp_c, temp_c + 20.0)
}

/// What every station shares in one hour.
struct Hour<'a> {
    /// `YYYY-MM-DD HH:MM`.
    time: &'a [u8],
    utc_hour: f64,
    /// Seasonal phase: +1 in mid July, -1 in mid January.
    season: f64,
    /// Sun height phase: 1 at the June solstice, 0 at the December one.
    sun: f64,
}

/// Weather shared by the stations of a state (synoptic-scale anomalies).
struct Region {
    temp: f64,
    pressure: f64,
    rng: ChaCha8Rng,
}

impl Region {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let temp = 2.5 * gauss(&mut rng);
        let pressure = 6.0 * gauss(&mut rng);
        Region {
            temp,
            pressure,
            rng,
        }
    }

    fn step(&mut self) {
        self.temp = ar1(self.temp, 0.985, 2.5, &mut self.rng);
        self.pressure = ar1(self.pressure, 0.99, 6.0, &mut self.rng);
    }
}

/// One station: fixed text, climate constants and the state of its random processes.
struct Station {
    /// `zip,state,name,`
    head: Box<[u8]>,
    /// `,lat,lon,`
    place: Box<[u8]>,
    state: usize,
    lat: f64,
    /// Longitude / 15: local solar time minus UTC, in hours.
    lon_hours: f64,
    // Climate.
    temp_mean: f64,
    temp_season: f64,
    temp_diurnal: f64,
    humidity_mean: f64,
    humidity_diurnal: f64,
    pressure_offset: f64,
    wind_mean: f64,
    wind_prevailing: f64,
    cloud_mean: f64,
    rain_start: f64,
    // Random processes.
    temp: f64,
    humidity: f64,
    pressure: f64,
    cloud: f64,
    wind: f64,
    wind_degree: f64,
    raining: bool,
    rain_rate: f64,
    rng: ChaCha8Rng,
}

impl Station {
    fn new(site: &Site, seed: u64) -> Self {
        let s = &STATES[site.state];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let r = &mut rng;
        let dryness = (-s.humid_bias / 25.0).clamp(0.0, 1.0);
        let temp_mean = 24.5 - 0.72 * (site.lat - 24.0).max(0.0) + s.temp_bias + 1.5 * gauss(r);
        let temp_season = (0.55 * (site.lat - 18.0)).clamp(1.5, 19.0) * s.amp_scale;
        let temp_diurnal =
            (4.5 + 2.5 * dryness) * (0.8 + 0.4 * unit(r)) * (0.6 + 0.4 * s.amp_scale);
        let humidity_mean = (68.0 + s.humid_bias + 6.0 * gauss(r)).clamp(15.0, 90.0);
        let humidity_diurnal = 12.0 + 6.0 * dryness + 3.0 * unit(r);
        let pressure_offset = 2.5 * gauss(r);
        let wind_mean = 6.0 + 10.0 * unit(r);
        let wind_prevailing = (250.0 + 50.0 * gauss(r)).rem_euclid(360.0);
        let cloud_mean = (35.0 + 0.6 * s.humid_bias + 10.0 * gauss(r)).clamp(5.0, 80.0);
        let rain_start =
            0.012 * (1.0 + s.humid_bias / 40.0).clamp(0.25, 2.0) * (0.8 + 0.4 * unit(r));
        let temp = gauss(r);
        let humidity = 6.0 * gauss(r);
        let pressure = gauss(r);
        let cloud = 22.0 * gauss(r);
        let wind = 5.0 * gauss(r);
        let wind_degree = (wind_prevailing + 40.0 * gauss(r)).rem_euclid(360.0);
        let raining = unit(r) < 0.05;
        let rain_rate = 0.2 + 3.0 * unit(r).powi(3);

        let mut head = Vec::with_capacity(40);
        head.extend_from_slice(site.zip.as_bytes());
        head.push(b',');
        head.extend_from_slice(s.code.as_bytes());
        head.push(b',');
        head.extend_from_slice(site.name.as_bytes());
        head.push(b',');
        let mut place = Vec::with_capacity(20);
        place.push(b',');
        put_fixed(&mut place, site.lat, 2);
        place.push(b',');
        put_fixed(&mut place, site.lon, 2);
        place.push(b',');
        Station {
            head: head.into(),
            place: place.into(),
            state: site.state,
            lat: site.lat,
            lon_hours: site.lon / 15.0,
            temp_mean,
            temp_season,
            temp_diurnal,
            humidity_mean,
            humidity_diurnal,
            pressure_offset,
            wind_mean,
            wind_prevailing,
            cloud_mean,
            rain_start,
            temp,
            humidity,
            pressure,
            cloud,
            wind,
            wind_degree,
            raining,
            rain_rate,
            rng,
        }
    }

    /// Advances the station by one hour and appends its row (with `\n`) to `line`.
    fn row(&mut self, hour: &Hour<'_>, region: &Region, line: &mut Vec<u8>) {
        let local = (hour.utc_hour + self.lon_hours).rem_euclid(24.0);
        let shape = diurnal(local);
        let is_day = (6.0..18.0).contains(&local);
        let (pressure_anomaly, raining) = self.step_weather(region);
        let r = &mut self.rng;

        // Precipitation and cloud.
        let precip_mm = if raining {
            round_to(self.rain_rate * (0.1 + 1.5 * unit(r).powi(2)), 2)
        } else {
            0.0
        };
        let cloud = (self.cloud_mean + self.cloud + if raining { 55.0 } else { 0.0 }
            - 2.0 * pressure_anomaly.max(0.0))
        .clamp(0.0, 100.0);
        let cloud = round(cloud);

        // Temperature.
        let temp = self.temp_mean
            + self.temp_season * hour.season
            + self.temp_diurnal * (1.0 - 0.5 * cloud / 100.0) * shape
            + region.temp
            + self.temp
            + 0.25 * gauss(r)
            - if raining { 1.5 } else { 0.0 };
        let temp_c = round_to(temp.clamp(-50.0, 50.0), 1);

        // Humidity and dew point.
        let mut humidity = self.humidity_mean + self.humidity - self.humidity_diurnal * shape
            + 0.08 * cloud
            - 1.2 * region.temp;
        if raining {
            humidity = (humidity + 25.0).max(80.0);
        }
        let humidity = round(humidity.clamp(5.0, 100.0));
        let dewpoint_c = round_to(dewpoint(temp_c, humidity), 1).min(temp_c);

        // Pressure.
        let pressure_mb = round_to(
            (1013.25
                + self.pressure_offset
                + pressure_anomaly
                + 0.6 * (std::f64::consts::TAU * (local - 10.0) / 12.0).cos())
            .clamp(960.0, 1050.0),
            1,
        );

        // Wind.
        let wind_kph = round_to(
            (self.wind_mean * (1.0 + 0.3 * shape)
                + self.wind
                + 0.6 * (-pressure_anomaly).max(0.0)
                + if raining { 5.0 } else { 0.0 })
            .clamp(0.0, 60.0),
            1,
        );
        let gust_kph = round_to(
            (wind_kph * (1.15 + 0.5 * unit(r)) + 2.0 * unit(r)).min(wind_kph + 40.0),
            1,
        )
        .max(wind_kph);
        let wind_degree = (round_i64(self.wind_degree) % 360) as u32;

        // Feels-like.
        let windchill_c = round_to(wind_chill(temp_c, wind_kph), 1).min(temp_c);
        let heatindex_c = round_to(heat_index(temp_c, humidity), 1).max(temp_c);
        let feelslike_c = if windchill_c < temp_c {
            windchill_c
        } else {
            heatindex_c
        };

        // Chances.
        let snow_share = ((1.0 - temp_c) / 2.0).clamp(0.0, 1.0);
        let chance = if raining {
            70.0 + 30.0 * unit(r)
        } else {
            ((cloud - 50.0) * 0.7 + (humidity - 75.0) * 0.5 - 2.0 * pressure_anomaly)
                .clamp(0.0, 60.0)
        };
        let chance_of_rain = round(chance * (1.0 - snow_share));
        let chance_of_snow = round(chance * snow_share);
        let snow_cm = if temp_c < 0.0 && precip_mm > 0.0 {
            round_to(precip_mm * (0.8 + 0.5 * unit(r)), 2)
        } else {
            0.0
        };

        // Visibility and UV.
        let vis_km = if raining {
            10.0 - (1.5 + 1.5 * precip_mm + if snow_cm > 0.0 { 2.0 } else { 0.0 }).min(9.5)
        } else if humidity >= 97.0 && !is_day {
            0.5 + 4.0 * unit(r)
        } else if humidity >= 90.0 {
            8.0 + 2.0 * unit(r)
        } else {
            10.0
        };
        let vis_km = round_to(vis_km, 1);
        let uv = if is_day {
            let summer = 12.0 - 0.12 * (self.lat - 20.0);
            let winter = 8.5 - 0.28 * (self.lat - 20.0);
            let peak = (winter + (summer - winter) * hour.sun).clamp(1.0, 11.0);
            let sun = (std::f64::consts::PI * (local - 6.0) / 12.0).sin().max(0.0);
            round(peak * sun * (1.0 - 0.75 * cloud / 100.0)).clamp(0.0, 11.0)
        } else {
            0.0
        };

        let observation = Observation {
            temp_c,
            is_day,
            wind_kph,
            wind_degree,
            pressure_mb,
            precip_mm,
            snow_cm,
            humidity,
            cloud,
            feelslike_c,
            windchill_c,
            heatindex_c,
            dewpoint_c,
            chance_of_rain,
            chance_of_snow,
            vis_km,
            gust_kph,
            uv,
        };
        self.write_row(hour, &observation, line);
    }

    /// Advances the station's random processes by an hour; returns the pressure anomaly
    /// and whether it rains.
    fn step_weather(&mut self, region: &Region) -> (f64, bool) {
        let r = &mut self.rng;
        self.temp = ar1(self.temp, 0.95, 1.0, r);
        self.humidity = ar1(self.humidity, 0.9, 6.0, r);
        self.pressure = ar1(self.pressure, 0.97, 1.0, r);
        self.cloud = ar1(self.cloud, 0.9, 22.0, r);
        self.wind = ar1(self.wind, 0.88, 5.0, r);
        let pull = ((self.wind_prevailing - self.wind_degree + 540.0).rem_euclid(360.0)) - 180.0;
        self.wind_degree = (self.wind_degree + 0.05 * pull + 15.0 * gauss(r)).rem_euclid(360.0);
        let pressure_anomaly = region.pressure + self.pressure;
        if self.raining {
            if unit(r) < 0.18 {
                self.raining = false;
            } else {
                self.rain_rate =
                    (0.8 * self.rain_rate + 0.2 * (0.2 + 3.0 * unit(r).powi(3))).max(0.05);
            }
        } else {
            let factor = if pressure_anomaly < -3.0 {
                2.5
            } else if pressure_anomaly > 4.0 {
                0.3
            } else {
                1.0
            };
            if unit(r) < self.rain_start * factor {
                self.raining = true;
                self.rain_rate = 0.2 + 4.0 * unit(r).powi(3);
            }
        }

        (pressure_anomaly, self.raining)
    }

    /// Appends the row of `observation` in the 37-column layout.
    fn write_row(&self, hour: &Hour<'_>, o: &Observation, line: &mut Vec<u8>) {
        line.extend_from_slice(&self.head);
        line.extend_from_slice(hour.time);
        line.extend_from_slice(&self.place);
        put_fixed(line, o.temp_c, 1);
        put_sep_fixed(line, c_to_f(o.temp_c), 1);
        put_sep_int(line, i64::from(o.is_day));
        put_sep_fixed(line, o.wind_kph / 1.609, 1);
        put_sep_fixed(line, o.wind_kph, 1);
        put_sep_int(line, i64::from(o.wind_degree));
        line.push(b',');
        line.extend_from_slice(compass(o.wind_degree).as_bytes());
        put_sep_fixed(line, o.pressure_mb, 1);
        put_sep_fixed(line, o.pressure_mb * 0.02953, 2);
        put_sep_fixed(line, o.precip_mm, 2);
        put_sep_fixed(line, o.precip_mm / 25.4, 2);
        put_sep_fixed(line, o.snow_cm, 2);
        put_sep_int(line, o.humidity as i64);
        put_sep_int(line, o.cloud as i64);
        put_sep_fixed(line, o.feelslike_c, 1);
        put_sep_fixed(line, c_to_f(o.feelslike_c), 1);
        put_sep_fixed(line, o.windchill_c, 1);
        put_sep_fixed(line, c_to_f(o.windchill_c), 1);
        put_sep_fixed(line, o.heatindex_c, 1);
        put_sep_fixed(line, c_to_f(o.heatindex_c), 1);
        put_sep_fixed(line, o.dewpoint_c, 1);
        put_sep_fixed(line, c_to_f(o.dewpoint_c), 1);
        put_sep_int(line, i64::from(o.chance_of_rain >= 50.0));
        put_sep_int(line, o.chance_of_rain as i64);
        put_sep_int(line, i64::from(o.chance_of_snow >= 50.0));
        put_sep_int(line, o.chance_of_snow as i64);
        put_sep_fixed(line, o.vis_km, 1);
        put_sep_fixed(line, o.vis_km / 1.609, 1);
        put_sep_fixed(line, o.gust_kph / 1.609, 1);
        put_sep_fixed(line, o.gust_kph, 1);
        put_sep_int(line, o.uv as i64);
        line.push(b'\n');
    }
}

/// One station's hour, as the generator computed it (before formatting).
struct Observation {
    temp_c: f64,
    is_day: bool,
    wind_kph: f64,
    wind_degree: u32,
    pressure_mb: f64,
    precip_mm: f64,
    snow_cm: f64,
    humidity: f64,
    cloud: f64,
    feelslike_c: f64,
    windchill_c: f64,
    heatindex_c: f64,
    dewpoint_c: f64,
    chance_of_rain: f64,
    chance_of_snow: f64,
    vis_km: f64,
    gust_kph: f64,
    uv: f64,
}

// ---------------------------------------------------------------------------------------
// Formatting

/// Appends a non-negative integer's decimal digits (pushes, no copies, for the common
/// small values).
#[inline]
fn put_digits(buf: &mut Vec<u8>, n: u64) {
    let digit = |d: u64| b'0' + (d % 10) as u8;
    match n {
        0..10 => buf.push(digit(n)),
        10..100 => buf.extend([digit(n / 10), digit(n)]),
        100..1000 => buf.extend([digit(n / 100), digit(n / 10), digit(n)]),
        1000..10000 => buf.extend([digit(n / 1000), digit(n / 100), digit(n / 10), digit(n)]),
        _ => {
            put_digits(buf, n / 10_000);
            let n = n % 10_000;
            buf.extend([digit(n / 1000), digit(n / 100), digit(n / 10), digit(n)]);
        }
    }
}

fn put_int(buf: &mut Vec<u8>, n: i64) {
    if n < 0 {
        buf.push(b'-');
    }
    put_digits(buf, n.unsigned_abs());
}

/// Appends `v` with exactly `decimals` (0..=3) decimals, rounded half away from zero;
/// never `-0.0`, never NaN/inf (non-finite values print as 0).
#[inline]
fn put_fixed(buf: &mut Vec<u8>, v: f64, decimals: u32) {
    let scale = match decimals {
        0 => 1,
        1 => 10,
        2 => 100,
        _ => 1000,
    };
    let v = if v.is_finite() { v } else { 0.0 };
    let n = round_i64(v * scale as f64);
    if n < 0 {
        buf.push(b'-');
    }
    let n = n.unsigned_abs();
    put_digits(buf, n / scale);
    match decimals {
        0 => {}
        1 => buf.extend([b'.', b'0' + (n % 10) as u8]),
        2 => buf.extend([b'.', b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]),
        _ => buf.extend([
            b'.',
            b'0' + (n / 100 % 10) as u8,
            b'0' + (n / 10 % 10) as u8,
            b'0' + (n % 10) as u8,
        ]),
    }
}

fn put_sep_fixed(buf: &mut Vec<u8>, v: f64, decimals: u32) {
    buf.push(b',');
    put_fixed(buf, v, decimals);
}

fn put_sep_int(buf: &mut Vec<u8>, n: i64) {
    buf.push(b',');
    put_int(buf, n);
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;

    fn args(stations: u32, days: u32, seed: u64) -> GenArgs {
        GenArgs {
            stations,
            days,
            hours: None,
            seed,
            start: NaiveDate::from_ymd_opt(2023, 9, 19).unwrap(),
            out: PathBuf::from("-"),
        }
    }

    #[test]
    fn hours_cuts_the_output_after_that_many_hours() {
        let mut cut = args(10, 2, 3);
        cut.hours = Some(30);
        let (text, summary) = generate(&cut);
        assert_eq!(summary.rows, 300);
        let (full, _) = generate(&args(10, 2, 3));
        assert!(
            full.starts_with(&text),
            "the cut output is a prefix of the full one"
        );
    }

    fn generate(args: &GenArgs) -> (Vec<u8>, GenSummary) {
        let mut out = Vec::new();
        let summary = write_csv(args, &mut out).unwrap();
        (out, summary)
    }

    /// The header and the rows, as parsed by the `csv` crate.
    fn parse(bytes: &[u8]) -> (Vec<String>, Vec<csv::StringRecord>) {
        let mut reader = csv::Reader::from_reader(bytes);
        let header = reader.headers().unwrap().iter().map(String::from).collect();
        let rows = reader.records().map(Result::unwrap).collect();
        (header, rows)
    }

    /// Column index by name.
    fn ix(name: &str) -> usize {
        HEADER.iter().position(|&h| h == name).unwrap()
    }

    fn num(row: &csv::StringRecord, name: &str) -> f64 {
        let text = &row[ix(name)];
        let v: f64 = text.parse().unwrap_or_else(|_| panic!("{name} = {text:?}"));
        assert!(v.is_finite(), "{name} = {text:?}");
        v
    }

    fn is_plain_zip(zip: &str) -> bool {
        zip.len() == 5 && zip.bytes().all(|b| b.is_ascii_digit())
    }

    fn is_suffixed_zip(zip: &str) -> bool {
        zip.len() == 10
            && is_plain_zip(&zip[..5])
            && zip.as_bytes()[5] == b'-'
            && zip[6..].bytes().all(|b| b.is_ascii_digit())
            && &zip[6..] != "0000"
    }

    /// The local solar hour of a row, as the generator defines it.
    fn local_hour(row: &csv::StringRecord) -> f64 {
        let utc: f64 = row[ix("time")][11..13].parse().unwrap();
        (utc + num(row, "lon") / 15.0).rem_euclid(24.0)
    }

    #[test]
    fn same_args_give_the_same_bytes_and_another_seed_does_not() {
        let (a, sa) = generate(&args(60, 2, 7));
        let (b, sb) = generate(&args(60, 2, 7));
        assert_eq!(sa, sb);
        assert!(a == b, "same arguments, different output");
        let (c, _) = generate(&args(60, 2, 8));
        assert!(a != c, "another seed, same output");
        // More days extend the file: the first day is unchanged.
        let (d, _) = generate(&args(60, 3, 7));
        assert!(d.starts_with(&a));
    }

    #[test]
    fn run_writes_a_file() {
        let path = std::env::temp_dir().join(format!("weathervane-gen-{}.csv", std::process::id()));
        let mut a = args(40, 1, 3);
        a.out = path.clone();
        let summary = run(&a).unwrap().expect("a file is written to the end");
        let written = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let (_, rows) = parse(&written);
        let states: HashSet<&str> = rows.iter().map(|row| &row[ix("state")]).collect();
        assert_eq!(
            summary,
            GenSummary {
                rows: 40 * 24,
                stations: 40,
                states: states.len()
            }
        );
        assert_eq!(written, generate(&a).0);
    }

    #[test]
    fn rows_header_zip_codes_and_times_are_as_specified() {
        let (stations, days) = (300u32, 2u32);
        let (bytes, summary) = generate(&args(stations, days, 1));
        assert!(bytes.starts_with(format!("{}\n", HEADER.join(",")).as_bytes()));
        let (header, rows) = parse(&bytes);
        assert_eq!(header.len(), 37);
        assert_eq!(header, HEADER);
        assert_eq!(rows.len() as u64, u64::from(stations * days * 24));
        assert_eq!(summary.rows, rows.len() as u64);
        assert_eq!(summary.stations, stations);
        assert_eq!(summary.states, STATES.len());

        let first_hour: Vec<&str> = rows[..stations as usize].iter().map(|r| &r[0]).collect();
        for (h, hour) in rows.chunks(stations as usize).enumerate() {
            let expected = NaiveDate::from_ymd_opt(2023, 9, 19)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                + chrono::TimeDelta::hours(h as i64);
            let expected = expected.format("%Y-%m-%d %H:%M").to_string();
            let mut zips = HashSet::new();
            for (i, row) in hour.iter().enumerate() {
                assert_eq!(row.len(), 37);
                assert_eq!(&row[ix("time")], expected);
                let zip = &row[0];
                assert!(is_plain_zip(zip), "{zip:?}");
                assert!(
                    zips.insert(zip.to_owned()),
                    "duplicate zip {zip} at {expected}"
                );
                // Same stations in the same order (by zip) every hour.
                assert_eq!(zip, first_hour[i]);
                let state = &row[ix("state")];
                assert!(state.len() == 2 && state.bytes().all(|b| b.is_ascii_uppercase()));
                assert!(!row[ix("name")].is_empty());
            }
            assert!(first_hour.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn columns_are_consistent() {
        let (bytes, _) = generate(&args(300, 2, 11));
        let (_, mut rows) = parse(&bytes);
        // A winter week adds snow and wind chill.
        let mut winter = args(200, 3, 5);
        winter.start = NaiveDate::from_ymd_opt(2024, 1, 10).unwrap();
        let winter_bytes = generate(&winter).0;
        rows.extend(parse(&winter_bytes).1);
        let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol + 1e-9;
        let (mut snowy, mut rainy, mut chilled, mut heated) = (0, 0, 0, 0);
        for row in &rows {
            for (i, field) in row.iter().enumerate() {
                if !matches!(
                    HEADER[i],
                    "zip_code" | "state" | "name" | "time" | "wind_dir"
                ) {
                    num(row, HEADER[i]);
                    assert!(!field.contains("NaN") && !field.contains("inf"));
                }
            }
            let state = STATES.iter().find(|s| s.code == &row[ix("state")]).unwrap();
            let (lat, lon) = (num(row, "lat"), num(row, "lon"));
            assert!((state.lat.0..=state.lat.1).contains(&lat) && lon < 0.0);
            assert!((state.lon.0..=state.lon.1).contains(&lon));

            let temp = num(row, "temp_c");
            assert!(close(num(row, "temp_f"), temp * 1.8 + 32.0, 0.11));
            for (c, f) in [
                ("feelslike_c", "feelslike_f"),
                ("windchill_c", "windchill_f"),
                ("heatindex_c", "heatindex_f"),
                ("dewpoint_c", "dewpoint_f"),
            ] {
                assert!(
                    close(num(row, f), num(row, c) * 1.8 + 32.0, 0.11),
                    "{c}/{f}"
                );
            }
            let humidity = num(row, "humidity");
            assert!(!row[ix("humidity")].contains('.') && (0.0..=100.0).contains(&humidity));
            let dewpoint = num(row, "dewpoint_c");
            assert!(dewpoint <= temp);
            assert!(num(row, "windchill_c") <= temp && num(row, "heatindex_c") >= temp);
            chilled += usize::from(num(row, "windchill_c") < temp);
            heated += usize::from(num(row, "heatindex_c") > temp);

            let (kph, mph) = (num(row, "wind_kph"), num(row, "wind_mph"));
            assert!((0.0..=60.0).contains(&kph) && close(mph, kph / 1.609, 0.051));
            let (gust_kph, gust_mph) = (num(row, "gust_kph"), num(row, "gust_mph"));
            assert!(gust_kph >= kph && gust_mph >= mph && close(gust_mph, gust_kph / 1.609, 0.051));
            let degree: u32 = row[ix("wind_degree")].parse().unwrap();
            assert!(degree < 360);
            let dir = &row[ix("wind_dir")];
            let points = [
                "N", "NNE", "NE", "ENE", "E", "ESE", "SE", "SSE", "S", "SSW", "SW", "WSW", "W",
                "WNW", "NW", "NNW",
            ];
            let center = points.iter().position(|&p| p == dir).unwrap() as f64 * 22.5;
            let off = (f64::from(degree) - center + 540.0).rem_euclid(360.0) - 180.0;
            assert!(off.abs() <= 11.25, "{degree} is not {dir}");

            let mb = num(row, "pressure_mb");
            assert!(
                (950.0..=1060.0).contains(&mb)
                    && close(num(row, "pressure_in"), mb * 0.02953, 0.0051)
            );
            let mm = num(row, "precip_mm");
            assert!(mm >= 0.0 && close(num(row, "precip_in"), mm / 25.4, 0.0051));
            let snow = num(row, "snow_cm");
            assert!(snow >= 0.0);
            if snow > 0.0 {
                assert!(temp < 0.0 && mm > 0.0);
                snowy += 1;
            }
            rainy += usize::from(mm > 0.0);
            let cloud = num(row, "cloud");
            assert!(!row[ix("cloud")].contains('.') && (0.0..=100.0).contains(&cloud));
            for (will, chance) in [
                ("will_it_rain", "chance_of_rain"),
                ("will_it_snow", "chance_of_snow"),
            ] {
                let (will, chance) = (&row[ix(will)], num(row, chance));
                assert!(
                    (0.0..=100.0).contains(&chance) && !row[ix("chance_of_rain")].contains('.')
                );
                assert_eq!(will, if chance >= 50.0 { "1" } else { "0" });
            }
            let vis = num(row, "vis_km");
            assert!(
                (0.0..=10.0).contains(&vis) && close(num(row, "vis_miles"), vis / 1.609, 0.051)
            );
            if mm > 0.0 {
                assert!(vis < 10.0);
            }
            let is_day = &row[ix("is_day")];
            assert_eq!(
                is_day,
                if (6.0..18.0).contains(&local_hour(row)) {
                    "1"
                } else {
                    "0"
                }
            );
            let uv = num(row, "uv");
            assert!((0.0..=11.0).contains(&uv));
            if is_day == "0" {
                assert_eq!(uv, 0.0);
            }
        }
        // The interesting branches do happen.
        assert!(
            rainy > rows.len() / 100 && rainy < rows.len() / 4,
            "rainy rows: {rainy}"
        );
        assert!(
            snowy > 0 && chilled > 0 && heated > 0,
            "{snowy} {chilled} {heated}"
        );
    }

    #[test]
    fn ties_happen_but_not_everywhere() {
        let (bytes, _) = generate(&args(300, 1, 1));
        let (_, rows) = parse(&bytes);
        let temps: HashSet<&str> = rows[..300].iter().map(|r| &r[ix("temp_c")]).collect();
        assert!(
            temps.len() < 300 && temps.len() > 100,
            "{} distinct temps",
            temps.len()
        );
    }

    #[test]
    fn a_small_sample_covers_many_states_with_several_zip_codes_each() {
        let (bytes, summary) = generate(&args(300, 1, 1));
        let (_, rows) = parse(&bytes);
        let mut by_state: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        for row in &rows[..300] {
            by_state
                .entry(row[ix("state")].to_owned())
                .or_default()
                .insert(row[0].to_owned());
        }
        assert!(by_state.len() >= 15);
        assert_eq!(by_state.len(), summary.states);
        assert!(
            by_state.values().all(|zips| zips.len() >= 2),
            "{by_state:?}"
        );
        assert!(by_state["CA"].len() > by_state["WY"].len());
    }

    #[test]
    fn afternoons_are_warmer_than_early_mornings() {
        let (bytes, _) = generate(&args(300, 1, 2));
        let (_, rows) = parse(&bytes);
        let (mut afternoon, mut morning) = (Vec::new(), Vec::new());
        for row in &rows {
            let local = local_hour(row);
            if (13.0..16.0).contains(&local) {
                afternoon.push(num(row, "temp_c"));
            } else if (4.0..7.0).contains(&local) {
                morning.push(num(row, "temp_c"));
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(afternoon.len() > 500 && morning.len() > 500);
        assert!(
            mean(&afternoon) > mean(&morning) + 3.0,
            "afternoon {} vs morning {}",
            mean(&afternoon),
            mean(&morning)
        );
    }

    #[test]
    fn every_state_and_dc_has_stations_and_its_own_zip_prefixes() {
        let codes: HashSet<&str> = STATES.iter().map(|s| s.code).collect();
        assert_eq!(codes.len(), 51, "50 states and DC, each once");
        for code in [
            "AR", "CT", "DC", "DE", "IA", "ID", "KS", "MS", "NE", "NH", "RI", "SD", "WV",
        ] {
            assert!(codes.contains(code), "{code}");
        }
        let mut prefixes = HashSet::new();
        for state in &STATES {
            for &(first, last) in state.zips {
                for prefix in first..=last {
                    assert!(
                        prefixes.insert(prefix),
                        "{} shares zip prefix {prefix:03}",
                        state.code
                    );
                }
            }
        }
        let (bytes, summary) = generate(&args(300, 1, 1));
        assert_eq!(
            summary.states, 51,
            "the sample's 300 stations cover every state"
        );
        let (_, rows) = parse(&bytes);
        let states: HashSet<&str> = rows.iter().map(|row| &row[ix("state")]).collect();
        assert_eq!(states, codes);
    }

    #[test]
    fn zip_codes_stay_unique_at_every_size() {
        for stations in [
            0, 1, 5, 37, 38, 75, 76, 300, 43_800, 90_000, 90_001, 175_200,
        ] {
            let sites = layout(9, stations).unwrap();
            assert_eq!(sites.len(), stations as usize);
            let zips: HashSet<&str> = sites.iter().map(|s| s.zip.as_str()).collect();
            assert_eq!(zips.len(), sites.len(), "{stations} stations");
            for site in &sites {
                if stations <= MAX_PLAIN_ZIP_STATIONS {
                    assert!(is_plain_zip(&site.zip), "{stations}: {:?}", site.zip);
                } else {
                    assert!(
                        is_plain_zip(&site.zip) || is_suffixed_zip(&site.zip),
                        "{:?}",
                        site.zip
                    );
                }
            }
            let mut per_state = [0u32; STATES.len()];
            sites.iter().for_each(|s| per_state[s.state] += 1);
            if stations >= 2 * STATES.len() as u32 {
                assert!(
                    per_state.iter().all(|&n| n >= 2),
                    "{stations}: {per_state:?}"
                );
            }
        }
    }

    #[test]
    fn state_table_is_sane() {
        assert!(STATES.len() >= 20);
        let mut owner = vec![None; 1000];
        for (i, s) in STATES.iter().enumerate() {
            assert!(s.code.len() == 2 && s.code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(s.lat.0 < s.lat.1 && s.lon.0 < s.lon.1 && s.lon.1 < 0.0);
            assert!(!s.towns.is_empty() && s.towns.iter().all(|t| !t.contains([',', '"'])));
            for &(a, b) in s.zips {
                assert!(a <= b && b < 1000);
                for prefix in a..=b {
                    assert_eq!(owner[prefix as usize], None, "prefix {prefix:03} twice");
                    owner[prefix as usize] = Some(i);
                }
            }
        }
        let codes: HashSet<&str> = STATES.iter().map(|s| s.code).collect();
        assert_eq!(codes.len(), STATES.len());
    }

    #[test]
    fn formatting_helpers() {
        let text = |v: f64, d: u32| {
            let mut buf = Vec::new();
            put_fixed(&mut buf, v, d);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(text(12.0, 1), "12.0");
        assert_eq!(text(-0.04, 1), "0.0");
        assert_eq!(text(-3.25, 2), "-3.25");
        assert_eq!(text(0.005, 2), "0.01");
        assert_eq!(text(1013.25, 1), "1013.3");
        assert_eq!(text(f64::NAN, 1), "0.0");
        assert_eq!(text(7.0, 0), "7");
        let mut buf = Vec::new();
        put_int(&mut buf, -120);
        assert_eq!(buf, b"-120");
        assert_eq!(
            [
                compass(0),
                compass(11),
                compass(12),
                compass(348),
                compass(349)
            ],
            ["N", "N", "NNE", "NNW", "N"]
        );
        assert_eq!(compass(270), "W");
    }
}
