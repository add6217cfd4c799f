//! The markdown section `tmca bench step` writes: the throughput table and one profile table
//! per size, with the method.

use super::result::{median, ProbeResult};

/// Everything measured at one image size.
pub struct SizeRun {
    pub size: usize,
    pub train: ProbeResult,
    pub infer: ProbeResult,
    pub loader: ProbeResult,
    pub torch_train: Option<ProbeResult>,
    pub torch_infer: Option<ProbeResult>,
}

/// How the run was made.
pub struct Meta {
    pub date: String,
    pub machine: String,
    pub command: String,
    /// torch's version, or why PyTorch was skipped.
    pub torch: Result<String, String>,
    pub threads: usize,
    /// 1-minute load average when the run started.
    pub load: Option<f64>,
    pub batch: usize,
    pub warmup: usize,
    pub steps: usize,
    pub reps: usize,
}

const METHOD: &str = "\
**Profile method.** candle has no profiler, so `tmca bench step` builds one from two \
measurements. (1) *In place*: each timed step is split into phases timed with a wall clock — \
batch → tensors, forward + loss, backward, gradient norm + clipping, AdamW, freeing the \
step's graph. (2) *Replay*: during one extra forward + loss, the building blocks \
(`trainer/src/nn`: convolutions, transposed convolutions, linear layers, the attention core \
softmax(QKᵀ)V, LayerNorms, GELU; and the TMCA-specific L2 normalisation, masked pooling, \
InfoNCE and enhancement maps) record each call — its part, a copy of the module and its inputs \
— through `trainer/src/profile.rs`, a thread-local recorder only the bench switches on. Each \
recorded call is then run alone: forward, and forward + backward of Σ(y·g) with a fixed random \
g (inputs the real backward reached are variables again, so weight and input gradients are \
both computed); the backward time is the difference minus the cost of Σ(y·g) and its own \
backward, measured on detached outputs. Medians over the repetitions, summed per part. What \
the parts do not cover of the measured forward and backward phases is shown as *other* \
(elementwise glue between blocks, reshapes and copies, embeddings); replaying calls alone \
misses cache effects between neighbours, so *other* can come out slightly negative. The \
PyTorch column is the same method applied to the mirror by `tests/reference/bench_torch.py` \
(forward hooks on its modules, wrappers of its functions). Data loading runs in the loader's \
threads, in parallel to the step, and is not part of it: its row is the time one loader \
thread needs per batch, for scale.";

fn fmt_ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

fn torch_cell(p: Option<&ProbeResult>, f: impl Fn(&ProbeResult) -> String) -> String {
    p.map_or_else(|| "skipped".into(), f)
}

/// The throughput / memory table.
fn throughput(runs: &[SizeRun]) -> String {
    let mut t = String::from(
        "| size | measure | tmca | PyTorch | tmca / PyTorch |\n|---|---|---|---|---|\n",
    );
    for r in runs {
        let s = format!("{0}×{0}", r.size);
        let rows: [(&str, &ProbeResult, Option<&ProbeResult>); 2] = [
            ("training step", &r.train, r.torch_train.as_ref()),
            ("inference", &r.infer, r.torch_infer.as_ref()),
        ];
        for (what, ours, theirs) in rows {
            t.push_str(&format!(
                "| {s} | {what} | {:.1} img/s | {} | {} |\n",
                ours.img_per_s,
                torch_cell(theirs, |p| format!("{:.1} img/s", p.img_per_s)),
                theirs.map_or("—".into(), |p| fmt_ratio(ours.img_per_s, p.img_per_s)),
            ));
            t.push_str(&format!(
                "| {s} | {what}: peak RSS | {:.0} MB | {} | {} |\n",
                ours.peak_rss_mb,
                torch_cell(theirs, |p| format!("{:.0} MB", p.peak_rss_mb)),
                theirs.map_or("—".into(), |p| fmt_ratio(ours.peak_rss_mb, p.peak_rss_mb)),
            ));
        }
        let l = &r.loader;
        let bps = l.batches_per_s.unwrap_or(f64::NAN);
        t.push_str(&format!(
            "| {s} | loader ({} threads, augmented) | {bps:.1} batches/s = {:.0} img/s | — | — |\n",
            l.workers.unwrap_or(0),
            bps * l.batch as f64,
        ));
    }
    t
}

/// One row of a profile: label, calls (0 for phases), forward and backward ms (None for a
/// phase that is neither), total ms.
struct Row {
    label: String,
    calls: usize,
    forward: Option<f64>,
    backward: Option<f64>,
    total: f64,
}

fn phase(label: &str, ms: f64) -> Row {
    Row {
        label: label.into(),
        calls: 0,
        forward: None,
        backward: None,
        total: ms,
    }
}

/// Every row of a profile, unsorted.
fn rows(p: &ProbeResult) -> Vec<Row> {
    let ph = |k: &str| p.phases.get(k).copied().unwrap_or(0.0);
    let fwd: f64 = p.profile.iter().map(|x| x.forward_ms).sum();
    let bwd: f64 = p.profile.iter().map(|x| x.backward_ms).sum();
    let mut v: Vec<Row> = p
        .profile
        .iter()
        .map(|x| Row {
            label: x.part.clone(),
            calls: x.calls,
            forward: Some(x.forward_ms),
            backward: Some(x.backward_ms),
            total: x.forward_ms + x.backward_ms,
        })
        .collect();
    let (of, ob) = (ph("forward") - fwd, ph("backward") - bwd);
    v.push(Row {
        label: "other (glue, reshapes, embeddings)".into(),
        calls: 0,
        forward: Some(of),
        backward: Some(ob),
        total: of + ob,
    });
    v.push(phase("gradient norm + clipping", ph("clip")));
    v.push(phase("optimiser (AdamW)", ph("optimizer")));
    v.push(phase("batch → tensors (host copies)", ph("inputs")));
    v.push(phase("freeing the step's graph", ph("release")));
    v
}

fn ms(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| format!("{x:.1}"))
}

/// The profile table of one size.
fn profile(r: &SizeRun) -> String {
    let ours = &r.train;
    let step = median(&ours.step_ms);
    let theirs = r.torch_train.as_ref();
    let their_step = theirs.map_or(f64::NAN, |p| median(&p.step_ms));
    let their_rows = theirs.map(rows).unwrap_or_default();
    let mut v = rows(ours);
    v.sort_by(|a, b| b.total.total_cmp(&a.total));
    let mut t = format!(
        "#### {0}×{0}: tmca step {step:.0} ms (median){1}\n\n\
         | part | calls | forward ms | backward ms | total ms | % of step | PyTorch ms | PyTorch % | tmca / PyTorch time |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        r.size,
        theirs.map_or(String::new(), |_| format!(", PyTorch step {their_step:.0} ms")),
    );
    for row in &v {
        let other = their_rows
            .iter()
            .find(|x| x.label == row.label)
            .map(|x| x.total);
        let calls = if row.calls > 0 {
            row.calls.to_string()
        } else {
            String::new()
        };
        t.push_str(&format!(
            "| {} | {calls} | {} | {} | {:.1} | {:.1}% | {} | {} | {} |\n",
            row.label,
            ms(row.forward),
            ms(row.backward),
            row.total,
            100.0 * row.total / step,
            other.map_or("—".into(), |o| format!("{o:.1}")),
            other.map_or("—".into(), |o| format!("{:.1}%", 100.0 * o / their_step)),
            other.map_or("—".into(), |o| fmt_ratio(row.total, o)),
        ));
    }
    if let Some(ms) = r.loader.batch_ms_one_worker {
        t.push_str(&format!(
            "| data loading (one loader thread per batch, not in the step) | | | | {ms:.1} | {:.1}% | — | — | — |\n",
            100.0 * ms / step
        ));
    }
    t
}

/// The whole section.
pub fn section(runs: &[SizeRun], m: &Meta) -> String {
    let torch = match &m.torch {
        Ok(v) => format!("PyTorch {v} with `torch.set_num_threads({})`", m.threads),
        Err(why) => format!("PyTorch skipped ({why})"),
    };
    let threads = runs.first().map_or(0, |r| r.train.threads);
    let mut s = format!(
        "## Training step: tmca vs PyTorch\n\n\
         Measured {date} on {machine} (load average {load} when it started) by `{cmd}`: the embedded default config's model (`cpu-small`: \
         ConvNeXt widths 16/32/64/96, a 2-layer BERT trained from scratch, contrastive alignment and \
         LTE at all four levels), batch {b}, synthetic batches (random images, rectangular masks, \
         random reports; no dataset), f32 on the CPU; tmca (candle) with {threads} threads (`RAYON_NUM_THREADS`), {torch}. \
         A training step is what `tmca train` does per batch — batch → tensors, forward with masks, \
         loss, backward, gradient clipping, AdamW — and the PyTorch step is the same with the mirror \
         `tests/reference/tmca_ref.py`; inference is a forward pass without masks or autograd \
         (`torch.no_grad()`; tmca: detached parameters). Rates are medians over {steps} timed steps \
         after {warmup} warm-up steps. Every row is measured in a process of its own, so peak RSS \
         (VmHWM; `ru_maxrss` for Python) is per configuration and, for PyTorch, includes the \
         interpreter and torch's libraries. Ratios are tmca / PyTorch: above 1 means tmca is \
         faster (img/s) or uses more memory (RSS).\n\n",
        date = m.date,
        machine = m.machine,
        load = m.load.map_or("unknown".into(), |l| format!("{l:.2}")),
        cmd = m.command,
        b = m.batch,
        steps = m.steps,
        warmup = m.warmup,
    );
    s.push_str(&throughput(runs));
    // Without replays (`--profile-reps 0`, or a GPU) there is no profile to explain.
    if runs.iter().all(|r| r.train.profile.is_empty()) {
        return s;
    }
    s.push_str(&format!(
        "\n### Profile of the training step\n\n{METHOD} Each call replayed {} times.\n\n",
        m.reps
    ));
    for r in runs {
        if r.train.profile.is_empty() {
            continue;
        }
        s.push_str(&profile(r));
        s.push('\n');
    }
    s
}
