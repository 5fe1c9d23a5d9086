//! `iesp-test plot INPUT… -o DIR`: PNG charts of bench results (a thin
//! command line over [`iesp_plots`]: reading in [`iesp_plots::input`],
//! charts in [`iesp_plots::render`]). Inputs are bench JSON, bench CSV and
//! legacy `.dat` files; several inputs on one chart compare side by side.
//! Every input is read and the output directory checked before anything
//! is drawn: a bad input is a usage error naming the file and line.

use std::path::{Path, PathBuf};

use clap::Args;

const AFTER_HELP: &str = "\
Charts written to DIR (those the inputs have data for):
  iops-vs-qd.png       IOPS against queue depth, one line per input, target and block size
  latency-cdf.png      latency CDF on a log scale (bench JSON: every command's latency)
  iops-over-time.png   IOPS per second (bench JSON or CSV)
  p99-over-time.png    p99 latency per second (bench JSON or CSV)
  heatmap.png          IOPS over block size × jobs (bench --matrix, legacy .dat);
                       heatmap-INPUT[-TARGET].png with several matrices or targets

Inputs: bench --json reports, bench --csv files, and the tab-separated
`bs threads value` .dat files of block-speed-randread.py. verify and fsx
reports carry no per-second series: they are skipped, with a note. The
targets of a --compare run (in JSON, or after `# target NAME` lines in a
.dat) get a line and a heatmap each. A file is bench CSV when its name ends
in .csv or its first line holds a comma (and its name does not end in .dat).

Exit status:
  0    charts written
  2    usage error: an unreadable or malformed input (file:line: format:
       what), an output directory that cannot be written
  3    a chart could not be drawn

Examples:
  iesp-test plot ours.json tgt.json -o charts/
  iesp-test plot old-results.dat -o charts/";

/// `iesp-test plot`.
#[derive(Args, Debug, Clone)]
#[command(after_help = AFTER_HELP)]
pub struct PlotArgs {
    /// bench JSON, bench CSV or legacy .dat files.
    #[arg(required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Directory for the PNG files (created if missing).
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    pub out: PathBuf,
}

/// Creates `dir` if needed and checks that a file can be written in it.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("-o {}: {e}", dir.display()))?;
    tempfile::NamedTempFile::new_in(dir)
        .map(drop)
        .map_err(|e| format!("-o {}: cannot create a file there: {e}", dir.display()))
}

/// Runs `iesp-test plot`.
pub fn run(a: &PlotArgs) -> anyhow::Result<()> {
    let mut inputs = Vec::new();
    for p in &a.inputs {
        match iesp_plots::input::load(p).map_err(crate::exit::usage)? {
            iesp_plots::input::Loaded::Data { label, input } => inputs.push((label, input)),
            iesp_plots::input::Loaded::Skipped(why) => eprintln!("iesp-test plot: {why}"),
        }
    }
    if inputs.is_empty() {
        return Err(crate::exit::usage("plot: no input with data to draw"));
    }
    check_dir(&a.out).map_err(crate::exit::usage)?;
    let done = iesp_plots::render::render(&inputs, &a.out)
        .map_err(|e| crate::exit::io(anyhow::anyhow!("plot: {e}")))?;
    for n in &done.notes {
        eprintln!("iesp-test plot: {n}");
    }
    for f in &done.files {
        crate::output::say(format_args!("wrote {}", f.display()));
    }
    Ok(())
}
