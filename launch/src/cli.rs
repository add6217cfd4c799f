//! Command-line definitions (clap). Every flag documents itself: `tmca --help`,
//! `tmca data convert --help`, …

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// tmca — language-guided medical image segmentation (TMCA) on Zarr datasets, data-parallel
/// across GPUs and CPU ranks.
#[derive(Debug, Parser)]
#[command(name = "tmca", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (also settable with TMCA_LOG=debug).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the main job on the embedded default: generate the four synthetic datasets, validate
    /// them, render previews, measure the loader, train a CPU-sized TMCA and evaluate it on the
    /// test splits (single process, CPU; about a minute on 2 cores after the build).
    Quickstart(QuickstartArgs),
    /// Train TMCA (one process; under tmca launch, mpirun or srun, one rank). Without a
    /// CONFIG, trains the embedded default on the synthetic datasets.
    Train(TrainArgs),
    /// Train data-parallel on this node: start --nproc ranks of `tmca train` that meet through a
    /// rendezvous store and average gradients over a TCP ring (no MPI needed); stop all on the
    /// first failure and restart from the latest checkpoint up to --max-restarts times. Across
    /// nodes: one `tmca launch` per node with --nnodes/--node-rank/--master, or mpirun/srun
    /// (README).
    Launch(LaunchArgs),
    /// Evaluate a trained run: Dice and IoU per dataset, per-image mean and pixel-pooled, and
    /// the boundary distances HD95 and ASSD (pixels).
    Eval(EvalArgs),
    /// Predict masks from images and reports with a trained run.
    Predict(PredictArgs),
    /// Export a trained run as a self-contained PyTorch folder: the model's PyTorch mirror,
    /// all its weights, tokenizer, preprocessing and a predictor script (no tmca needed there).
    Export(ExportArgs),
    /// Compare two models on the same images (two `tmca eval --per-image` files): mean
    /// difference per dataset with a bootstrap interval and a Wilcoxon signed-rank test.
    Compare(CompareArgs),
    /// Summarise run directories: model, steps, best validation value (of `train.select`) and
    /// the latest test evaluation of each (for comparing runs of a sweep).
    Runs(RunsArgs),
    /// Print the embedded default config (a starting point for your own), or with `--all`
    /// every field of a config as a run resolves it.
    Config(ConfigArgs),
    /// Create, import and look at dataset stores.
    #[command(subcommand)]
    Data(DataCommand),

    /// Measure and record performance in BENCHMARKS.md.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Working directory for the generated data and outputs.
    #[arg(long, default_value = "runs/quickstart")]
    pub workdir: PathBuf,
    /// Image size of the generated datasets and of the model (a multiple of 32, 32–4096).
    #[arg(long, default_value_t = 64, value_parser = parse_model_size)]
    pub size: usize,
    /// Seed of the generator and the loader.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Import a dataset folder in one of the peers' layouts into a store.
    #[command(alias = "import")]
    Convert(ConvertArgs),
    /// Generate synthetic datasets mimicking the four modalities.
    Synth(SynthArgs),
    /// Print a store's schema, counts per split, report lengths and mask coverage.
    Inspect {
        /// The store (a directory).
        store: PathBuf,
    },
    /// Check every sample of a store; lists each offending sample; exit code 5 if any.
    Validate {
        /// The store (a directory).
        store: PathBuf,
        /// For a store without a recorded content digest (written by another tool or an
        /// older tmca) that has no problems: record the digest in its attributes, so that
        /// runs need not compute it from every sample each time they start.
        #[arg(long)]
        record: bool,
    },
    /// Render a PNG grid of images with mask overlays and reports.
    Preview(PreviewArgs),
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Folder layout: `lvit` ({Train,Val,Test}_Folder/{img,labelcol} + xlsx/csv text),
    /// `guidedecoder` (Images/, GTs/, train.csv/test.csv), `generic`
    /// (images/, masks/, reports/<id>.txt, splits.json) or `table` (one .csv/.xlsx with the
    /// columns image, mask, report and optionally split and name; paths relative to it).
    #[arg(long)]
    pub layout: tmca_data::convert::Layout,
    /// The dataset folder (with `--layout table`: the table file).
    #[arg(long)]
    pub input: PathBuf,
    /// The store to write (a directory; written under a temporary name, renamed when complete).
    #[arg(long)]
    pub output: PathBuf,
    /// Dataset name recorded in the store (e.g. qata, mosmed, kvasir, monuseg).
    #[arg(long)]
    pub name: String,
    /// Modality: xray, ct (stored gray), endoscopy, histopathology (stored RGB).
    #[arg(long)]
    pub modality: tmca_data::Modality,
    /// Stored image size (square, 1–4096; images and masks are resized to it); see
    /// --height/--width for other shapes.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Stored height (overrides --size).
    #[arg(long)]
    pub height: Option<usize>,
    /// Stored width (overrides --size).
    #[arg(long)]
    pub width: Option<usize>,
    /// Fraction of train taken as validation when the dataset has no validation split.
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f32,
    /// Read masks that are not exactly 0/1 or 0/255 (JPEG masks such as Kvasir-SEG's,
    /// anti-aliased drawings): foreground where the value is at least this fraction of the
    /// full value (255 for 8-bit files). Masks holding only 0 and 1 stay as they are. Without
    /// it, other values are an error naming the file.
    #[arg(long, value_name = "FRACTION")]
    pub mask_threshold: Option<f32>,
    /// Bits per pixel of 16-bit images (8–16; e.g. 12 for 12-bit CT saved in 16-bit PNGs):
    /// their values are scaled from this depth to 8 bits. Default: the dataset's, the
    /// smallest of 8, 10, 12, 14, 16 holding its largest value (one scale for all its images;
    /// recorded in the store, and used by predict for new images).
    #[arg(long, value_name = "BITS")]
    pub bit_depth: Option<u32>,
    /// Replace an existing output store (only once the new one is complete).
    #[arg(long)]
    pub force: bool,
    /// Only check (files, tables, image/mask sizes, every mask's values, all problems listed
    /// together): print the samples per split and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory: one store per modality is written inside it (synth-xray, …).
    #[arg(long)]
    pub output: PathBuf,
    /// Which datasets: all, xray, ct, endoscopy, histopathology (comma-separated).
    #[arg(long, default_value = "all")]
    pub modality: String,
    /// Training samples per dataset.
    #[arg(long, default_value_t = 160)]
    pub train: usize,
    /// Validation samples per dataset.
    #[arg(long, default_value_t = 40)]
    pub val: usize,
    /// Test samples per dataset.
    #[arg(long, default_value_t = 40)]
    pub test: usize,
    /// Image size (square, 32–4096).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seed: the same seed gives byte-identical stores.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Most target-like distractors (not in the mask, not in the report) per image.
    #[arg(long, default_value_t = 2)]
    pub max_distractors: usize,
    /// Replace existing stores.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The store (a directory).
    pub store: PathBuf,
    /// PNG file to write (`.png`; replaced if it exists).
    #[arg(long)]
    pub output: PathBuf,
    /// Split to show.
    #[arg(long, default_value = "train")]
    pub split: tmca_data::Split,
    /// Number of samples (spread evenly over the split; at least 1).
    #[arg(long, default_value_t = 12, value_parser = parse_positive)]
    pub count: u64,
    /// Tiles per row.
    #[arg(long, default_value_t = 4)]
    pub columns: usize,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Random sample reads/s from a store on disk and loader batches/s with augmentation.
    Data(BenchDataArgs),
    /// Test-split Dice of TMCA and its ablations (image-only, no contrastive, single-level,
    /// no LTE) and variants (composed ops, rotation augmentation, EMA) on the four synthetic
    /// datasets over several seeds, mean ± sd.
    Quality(BenchQualityArgs),
    /// Training-step and inference throughput, peak memory and loader rate of the default
    /// `cpu-small` TMCA at several image sizes, with a per-part profile of the step, against
    /// the PyTorch mirror (tests/reference/tmca_ref.py) measured in the same run.
    Step(BenchStepArgs),
    /// One measurement of `bench step` in this process (run by `bench step`, one child process
    /// per measurement so that peak memory is per configuration); prints one JSON line.
    #[command(hide = true)]
    StepProbe(StepProbeArgs),
}

#[derive(Debug, Args)]
pub struct BenchStepArgs {
    /// Image sizes (square, multiples of 32), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [128usize, 224], value_parser = parse_model_size)]
    pub sizes: Vec<usize>,
    /// Images per training/inference batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Untimed steps (and forward passes) before the timed ones.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed steps (and forward passes); the rates use their median.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Repetitions of each replayed call in the profile (median; 0 = no profile).
    #[arg(long, default_value_t = 3)]
    pub profile_reps: usize,
    /// Seconds each loader measurement runs (at least one epoch).
    #[arg(long, default_value_t = 3.0)]
    pub loader_seconds: f64,
    /// Skip the PyTorch mirror (tmca's numbers only).
    #[arg(long)]
    pub no_torch: bool,
    /// Python interpreter with torch for the mirror.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// The mirror's benchmark script.
    #[arg(long, default_value = "tests/reference/bench_torch.py")]
    pub torch_script: PathBuf,
    /// Compute threads of both sides: tmca's probes run with RAYON_NUM_THREADS set to it
    /// (candle's thread count), PyTorch with `torch.set_num_threads`.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Where the loader's synthetic stores live (kept between runs).
    #[arg(long, default_value = "runs/bench")]
    pub workdir: PathBuf,
    /// Markdown file whose step section is replaced with the new tables.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
}

/// What one probe measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeMode {
    /// Training steps (forward with masks, loss, backward, clipping, AdamW).
    Train,
    /// Forward passes without masks or gradients.
    Infer,
    /// Loader batches from a synthetic store.
    Loader,
}

#[derive(Debug, Args)]
pub struct StepProbeArgs {
    /// Image size (square, a multiple of 32).
    #[arg(long, value_parser = parse_model_size)]
    pub size: usize,
    /// What to measure.
    #[arg(long, value_enum)]
    pub mode: ProbeMode,
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Repetitions of each replayed call in the profile (train mode; 0 = no profile).
    #[arg(long, default_value_t = 0)]
    pub profile_reps: usize,
    /// Seconds of each loader measurement (loader mode).
    #[arg(long, default_value_t = 3.0)]
    pub loader_seconds: f64,
    /// Where the loader's synthetic store lives (loader mode).
    #[arg(long, default_value = "runs/bench")]
    pub workdir: PathBuf,
    /// Model preset: `cpu-small` (the embedded default) or `tiny` (ConvNeXt-T, the paper
    /// setting); train and infer modes.
    #[arg(long, default_value = "cpu-small")]
    pub preset: String,
    /// `cpu`, or `cuda` (GPU 0 of a CUDA build; every timed phase ends with a device
    /// synchronisation); train and infer modes.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// On a GPU, full f32 matrix products instead of TF32 (run.tf32 = false).
    #[arg(long)]
    pub no_tf32: bool,
}

#[derive(Debug, Args)]
pub struct BenchQualityArgs {
    /// Seeds per variant.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Optimiser steps per run (the embedded default config otherwise).
    #[arg(long, default_value_t = 960)]
    pub steps: u64,
    /// Runs and data live here; finished runs are reused.
    #[arg(long, default_value = "runs/quality")]
    pub workdir: PathBuf,
    /// Markdown file whose quality section is replaced with the new table.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct BenchDataArgs {
    /// Image size of the generated benchmark store.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Samples in the benchmark store.
    #[arg(long, default_value_t = 256)]
    pub samples: usize,
    /// Batch size of the loader.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Loader worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Where the benchmark store lives (kept between runs).
    #[arg(long, default_value = "runs/bench")]
    pub workdir: PathBuf,
    /// Markdown file whose data-loader section is replaced with the new table.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// TOML config (see `tmca config`); the embedded default when omitted.
    pub config: Option<PathBuf>,
    /// Continue from the newest valid checkpoint of the run directory.
    #[arg(long, conflicts_with = "resume_from")]
    pub resume: bool,
    /// Continue from this checkpoint directory.
    #[arg(long)]
    pub resume_from: Option<PathBuf>,
    /// Override `[run] dir`.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Override `[run] seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override `[data] fold` (the cross-validation fold that validates; needs `data.folds`).
    #[arg(long)]
    pub fold: Option<usize>,
    /// Stop after this many optimiser steps in total (with a checkpoint), as an interruption
    /// would; the learning-rate schedule still follows the config.
    #[arg(long)]
    pub stop_after: Option<u64>,
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Ranks to start on this machine, or `gpu`: one per visible GPU (CUDA builds).
    /// `data.batch_size` is per rank: the global batch is nproc × batch_size.
    #[arg(long, default_value = "2", value_parser = parse_nproc)]
    pub nproc: usize,
    /// Restart every rank from the latest checkpoint after a failure, up to this many times
    /// (not after a config, data or NaN error: those would fail again).
    #[arg(long, default_value_t = 0)]
    pub max_restarts: u32,
    /// Compute threads per rank (RAYON_NUM_THREADS, at least 1); default: the environment's
    /// RAYON_NUM_THREADS if set, else the cores this launcher may use / nproc.
    #[arg(long, value_parser = parse_positive)]
    pub threads: Option<u64>,
    /// Machines in the job: run `tmca launch` on each with the same --nnodes, --nproc and
    /// --master and its own --node-rank; node n runs ranks n·nproc … (n+1)·nproc − 1.
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// This machine's place among the --nnodes (0 runs the rendezvous store).
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// host:port of node 0's rendezvous store, reachable from every node (required with
    /// --nnodes > 1; default for one node: a free port on 127.0.0.1).
    #[arg(long)]
    pub master: Option<String>,
    /// Seconds the ranks get, after a forwarded SIGTERM or Ctrl-C, to finish their step and
    /// save a checkpoint before they are killed (raise it when a step or a checkpoint of a
    /// large model takes longer; keep it under the scheduler's own kill delay, SLURM's
    /// KillWait). After SIGUSR1, a warning ahead of a time limit, they get at least an hour.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = parse_positive)]
    pub stop_grace: u64,
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run directory (holds config.toml, tokenizer.json, checkpoints/). Several: their
    /// ensemble (the mean probability; e.g. `cv/fold*` of a cross-validation), on the first
    /// run's stores unless --store, at the runs' common `train.threshold` (runs with
    /// different ones need --threshold); the runs must share the input size and
    /// normalisation.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// `best`, `latest`, the name of one of the run's checkpoints (`step-00000120`) or a
    /// checkpoint directory of this run.
    #[arg(long, default_value = "best")]
    pub checkpoint: String,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: tmca_data::Split,
    /// Stores to evaluate (default: the run's).
    #[arg(long)]
    pub store: Vec<PathBuf>,
    /// Flip test-time augmentation: average each prediction with that of the left–right
    /// mirrored image described by the mirrored report ("left" ↔ "right").
    #[arg(long)]
    pub tta: bool,
    /// Foreground probability threshold of the scored masks (default: the run's
    /// `train.threshold`, 0.5 unless set).
    #[arg(long, value_parser = parse_threshold, allow_negative_numbers = true)]
    pub threshold: Option<f32>,
    /// Remove predicted components (8-connected) smaller than this fraction of the image
    /// before scoring, e.g. 0.001 (recorded beside as `…-a<F>.json`).
    #[arg(long, value_name = "FRACTION", value_parser = parse_area, allow_negative_numbers = true)]
    pub min_area: Option<f32>,
    /// Also score the thresholds 0.05, 0.10, …, 0.95 in the same pass and print them with the
    /// best (choose on --split val, then evaluate test with --threshold); with --min-area, each
    /// threshold removes its own small components.
    #[arg(long)]
    pub sweep: bool,
    /// Also write one CSV row per image here: dataset, index, source name, Dice, IoU, HD95,
    /// ASSD, predicted and mask pixels, report (for error analysis and paired comparisons of runs).
    #[arg(long)]
    pub per_image: Option<PathBuf>,
    /// Also write the results as JSON here. Evaluations of the run's own stores are always
    /// recorded in RUN/eval/<checkpoint>-<split>[-tta][-t<P>][-a<F>].json (read by `tmca runs`).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run directory (holds config.toml, tokenizer.json, checkpoints/). Several: their
    /// ensemble (each in member-K/, averaged by the export's predictor as `tmca predict RUN
    /// RUN…`).
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// A new (or empty) folder for the export.
    #[arg(long)]
    pub output: PathBuf,
    /// `best`, `latest`, the name of one of the run's checkpoints (`step-00000120`) or a
    /// checkpoint directory of this run.
    #[arg(long, default_value = "best")]
    pub checkpoint: String,
    /// Foreground probability threshold the export's predictor applies (default: the one the
    /// run's newest `tmca eval --split val --sweep` of this checkpoint chose, else its
    /// `train.threshold`; an ensemble of runs with different ones needs it).
    #[arg(long, value_parser = parse_threshold, allow_negative_numbers = true)]
    pub threshold: Option<f32>,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Per-image results of model A then of model B (`tmca eval RUN --per-image A.csv`, on
    /// the same stores and split); with `--vs`, every file of model A's repeats (seeds or
    /// folds of one setting), each image's score averaged over them.
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Model B's files of repeats (with the files of model A before `--vs`).
    #[arg(long, num_args = 1..)]
    pub vs: Vec<PathBuf>,
    /// Score compared: dice, iou, or the boundary distances hd95 and assd (lower is better:
    /// "B better" then counts the images where B's distance is smaller).
    #[arg(long, value_enum, default_value_t = CompareMetric::Dice)]
    pub metric: CompareMetric,
    /// Bootstrap resamples of the interval of the mean difference (at least 100).
    #[arg(long, default_value_t = 10000, value_parser = clap::value_parser!(u64).range(100..))]
    pub bootstrap: u64,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = CompareFormat::Markdown)]
    pub format: CompareFormat,
}

impl CompareArgs {
    /// The files of A and of B.
    pub fn sides(&self) -> Result<(&[PathBuf], &[PathBuf]), UsageError> {
        match (self.files.as_slice(), self.vs.is_empty()) {
            ([a, b], true) => Ok((std::slice::from_ref(a), std::slice::from_ref(b))),
            (_, true) => Err(UsageError(format!(
                "{} files: give two (A.csv B.csv), or model A's repeats, --vs, then model B's \
                 (A0.csv A1.csv --vs B0.csv B1.csv)",
                self.files.len()
            ))),
            (a, false) => Ok((a, self.vs.as_slice())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompareFormat {
    /// A Markdown table.
    #[value(name = "md")]
    Markdown,
    /// Every field, per dataset.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompareMetric {
    Dice,
    Iou,
    /// 95th-percentile Hausdorff distance in pixels (lower is better).
    Hd95,
    /// Average symmetric surface distance in pixels (lower is better).
    Assd,
}

impl CompareMetric {
    /// Its column in a `tmca eval --per-image` file.
    pub fn column(self) -> &'static str {
        match self {
            CompareMetric::Dice => "dice",
            CompareMetric::Iou => "iou",
            CompareMetric::Hd95 => "hd95",
            CompareMetric::Assd => "assd",
        }
    }

    /// Whether lower scores are better.
    pub fn is_distance(self) -> bool {
        matches!(self, CompareMetric::Hd95 | CompareMetric::Assd)
    }
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the config as a run resolves it (defaults and the preset's sizes filled in, as
    /// the run directory's config.toml keeps it; optional features left off are not listed)
    /// instead of the commented default.
    #[arg(long)]
    pub all: bool,
    /// With `--all`: the config file to resolve (default: the embedded default config).
    #[arg(requires = "all")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Run directories, or folders searched for them (a run directory holds config.toml).
    #[arg(default_value = "runs")]
    pub dirs: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = RunsFormat::Markdown)]
    pub format: RunsFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunsFormat {
    /// A Markdown table.
    #[value(name = "md")]
    Markdown,
    /// One line per run (no repeat groups).
    Csv,
    /// `{"runs": [...], "repeats": [...]}`: every run with every field, its test evaluation
    /// per dataset included, and the sets of repeats with each run's values.
    Json,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The run directory. Several: their ensemble (the mean probability, as `tmca eval RUN
    /// RUN…`; their common threshold, or --threshold; the first run's batch size).
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// `best`, `latest`, the name of one of the run's checkpoints (`step-00000120`) or a
    /// checkpoint directory of this run.
    #[arg(long, default_value = "best")]
    pub checkpoint: String,
    /// One image file (PNG, JPEG, BMP, TIFF) …
    #[arg(long, requires = "report", conflicts_with_all = ["store", "table"])]
    pub image: Option<PathBuf>,
    /// … and its report.
    #[arg(long)]
    pub report: Option<String>,
    /// Or every sample of a store split (batch mode).
    #[arg(long, conflicts_with = "table")]
    pub store: Option<PathBuf>,
    /// Split of the store.
    #[arg(long, default_value = "test")]
    pub split: tmca_data::Split,
    /// Or every row of a table of new images (batch mode, no masks needed): a `.csv` or
    /// `.xlsx` with the columns `Image` (file name) and `Description` (report), as LViT's and
    /// GuideDecoder's tables, or `image` and `report` (a `mask` column is ignored).
    #[arg(long)]
    pub table: Option<PathBuf>,
    /// Folder the table's image names are relative to (default: the table's folder).
    #[arg(long, requires = "table")]
    pub images: Option<PathBuf>,
    /// Images per forward pass in batch mode (default: the run's data.batch_size).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Also write the foreground probability at the image's size: `<name>_prob.png` (× 255)
    /// and `<name>_prob.npy` (float32, for numpy.load; other thresholds, ensembles).
    #[arg(long)]
    pub probs: bool,
    /// Foreground probability threshold of the masks (default: the one the run's newest `tmca
    /// eval --split val --sweep` of this checkpoint chose, else its `train.threshold`).
    #[arg(long, value_parser = parse_threshold, allow_negative_numbers = true)]
    pub threshold: Option<f32>,
    /// Remove mask components (8-connected) smaller than this fraction of the image, e.g.
    /// 0.001 (the probability files stay as predicted).
    #[arg(long, value_name = "FRACTION", value_parser = parse_area, allow_negative_numbers = true)]
    pub min_area: Option<f32>,
    /// Also write `<name>_lte<L>.png` for each level L of target enhancement: the map A_l
    /// (where the model finds what the report describes, 0..1) as a heat overlay on the image,
    /// at the image's size.
    #[arg(long)]
    pub maps: bool,
    /// Flip test-time augmentation (as `tmca eval --tta`).
    #[arg(long)]
    pub tta: bool,
    /// Folder for `<name>_mask.png` (0/255, the image's size), `<name>_overlay.png` and, in
    /// batch mode, `predictions.csv` (one row per image: name, source, report, foreground
    /// pixels and fraction). A name that repeats gets `_<k>` appended (k: its 0-based place in
    /// the listing; `predictions.csv` maps every name to its source).
    #[arg(long)]
    pub output: PathBuf,
}

/// `--nproc`: a count, or `gpu` for one rank per visible GPU.
fn parse_nproc(s: &str) -> Result<usize, String> {
    if s.eq_ignore_ascii_case("gpu") {
        return match tmca_worker::gpu_count() {
            Ok(0) => Err("`gpu`: no GPU is visible (CUDA_VISIBLE_DEVICES?)".into()),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("`gpu`: {e}")),
        };
    }
    s.parse()
        .map_err(|_| format!("{s:?}: a number of ranks, or `gpu`"))
}

/// A model input size: a multiple of 32 (the encoder's total stride), 32–4096.
fn parse_model_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n.is_multiple_of(32) && (32..=4096).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?}: an image size that is a multiple of 32 (the image encoder's stride), 32 to 4096"
        )),
    }
}

/// A count of at least 1.
fn parse_positive(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?}: a whole number, at least 1")),
    }
}

/// A command line that parses but does not make sense (exit code 2, as clap's own errors).
fn parse_threshold(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(t) if t > 0.0 && t < 1.0 => Ok(t),
        _ => Err(format!("{s:?}: a probability strictly between 0 and 1")),
    }
}

fn parse_area(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(a) if (0.0..1.0).contains(&a) => Ok(a),
        _ => Err(format!(
            "{s:?}: a fraction of the image's area, at least 0 and below 1"
        )),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes the model cannot take are refused before any work (the quickstart used to
    /// generate and check its data first, then fail at training).
    #[test]
    fn model_sizes_are_checked_when_parsed() {
        for line in [
            "tmca quickstart --size 48",
            "tmca quickstart --size 0",
            "tmca bench step --sizes 128,100",
            "tmca bench step-probe --size 8000 --mode train",
        ] {
            let err = Cli::try_parse_from(line.split_whitespace()).unwrap_err();
            assert!(err.to_string().contains("multiple of 32"), "{line}: {err}");
        }
        let ok = Cli::try_parse_from("tmca quickstart --size 96".split_whitespace()).unwrap();
        assert!(matches!(
            ok.command,
            Command::Quickstart(QuickstartArgs { size: 96, .. })
        ));
    }
}
