"""Write BENCHMARKS.md and the sweep plot from bench_train.py's JSON files.

Usage, from the repository root::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python benchmarks/bench_train.py --wait-idle 60 --json unset.json
    python benchmarks/bench_train.py --wait-idle 60 --json machine.json
    python benchmarks/report.py machine.json unset.json

Each JSON file is one run of bench_train.py (one OpenBLAS kernel); the report
has one table per run, in the order given, and one PNG with the LSTM
training-step time against the batch size and against the hidden size, crnn
and PyTorch of every run (needs matplotlib: ``pip install ".[bench]"``).
``--note TEXT`` (repeatable) or ``--notes-file PATH`` (paragraphs separated
by blank lines) adds paragraphs under the title, e.g. to say how the runs'
OpenBLAS settings were chosen. Nothing in the tables is typed
by hand: rerun the benchmarks and this script to update them.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import (LEGEND, SWEEP_BATCHES, SWEEP_HIDDEN,  # noqa: E402
                         rows_from_json, sweep_batch_config,
                         sweep_hidden_config, table_lines, target_summary)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "BENCHMARKS.md")
DEFAULT_PLOT = os.path.join(ROOT, "benchmarks", "lstm_train_sweep.png")


def run_label(run):
    env = run["environment"]
    core = env.get("openblas_core") or "?"
    coretype = env.get("OPENBLAS_CORETYPE")
    how = (f"OPENBLAS_CORETYPE={coretype}" if coretype
           else "OPENBLAS_CORETYPE unset")
    how += (f", OPENBLAS_L2_SIZE={env['OPENBLAS_L2_SIZE']}"
            if env.get("OPENBLAS_L2_SIZE") else ", OPENBLAS_L2_SIZE unset")
    return f"OpenBLAS kernel {core} ({how})", core


def run_section(run):
    env = run["environment"]
    label, core = run_label(run)
    # The rows are rebuilt from the workers' raw reports with the current
    # code, so a change in how rows are judged applies to old runs too.
    rows = rows_from_json(run) if run.get("reports") else run["rows"]
    lines = [f"## {label}", ""]
    if run.get("quick"):
        lines += ["**Quick run** (`--quick`: ~0.15 s per measurement, one "
                  "round, three sweep points per axis, a short "
                  "bench_stream.py): a smoke test, noisier than a full run; "
                  "not the final numbers.", ""]
    busy = env.get("cpu_busy_before")
    wait = run.get("cpu_wait")
    lines += [
        f"- command: `{run.get('command', 'bench_train.py')}`, "
        f"{run.get('date', '?')}, run time {run.get('run_seconds', 0):.0f} s; "
        f"each time the best of {run['rounds']} interleaved round(s) of "
        f"medians over ~{run['target_seconds']:g} s of calls"
        + (f", `--wait-idle {run['wait_idle']:g}`" if run.get("wait_idle")
           else ""),
        f"- Python {env['python']}, numpy {env['numpy']}, scipy "
        f"{env['scipy']}, torch {env['torch']}, onnxruntime "
        f"{env.get('onnxruntime')}, crnn {env['crnn']}"
        + (f" (checkout {env['git']})" if env.get("git") else "") + "; "
        f"{env.get('cpu_model') or env.get('machine')}, "
        f"{env['cpu_count']} CPUs",
        f"- OpenBLAS core loaded by scipy (crnn's BLAS): **{core}**; "
        + ", ".join(f"{lib}'s: {info['core']} ({info['config']})"
                    for lib, info in env["openblas"].items()
                    if isinstance(info, dict)),
        "- crnn's compiled extensions as measured, last written (UTC): "
        + (", ".join(run.get("crnn_builds") or []) or "not recorded")
        + (" — **crnn was rebuilt in place during this run**: its rows come "
           "from more than one build" if len(run.get("crnn_builds") or []) > 1
           else ""),
        "- machine load: "
        + (f"{busy:.0%} of the CPUs busy with other processes before the "
           "run; " if busy is not None else "")
        + (f"some task waited for a CPU {wait:.0%} of the run's time "
           "(Linux PSI; the `wait%` column gives it per row)"
           if wait is not None else "PSI not available"),
        "",
    ]
    headline, _, missed = target_summary(rows).partition("; missed: ")
    lines += [f"**{headline}.**" + (f" Missed: {missed}." if missed else ""),
              ""]
    lines += table_lines(rows, markdown=True)
    lines += [""] + [f"- {line}" for line in LEGEND.split("\n")]
    lines.append("")
    sweep = run.get("sweep") or {}
    for axis, title in (("batch", "batch size B at (100, B, 64, 256, 64)"),
                        ("hidden", "hidden size H at (100, 32, 64, H, 64)")):
        points = sweep.get(axis) or []
        if not points:
            continue
        lines += [f"LSTM training step, 1 thread, against the {title} "
                  "(the plot's data):", "",
                  "| " + axis[0].upper() + " | crnn | PyTorch | crnn/PyTorch |",
                  "|---|---|---|---|"]
        for point in points:
            c, t = point["crnn_ms"], point["torch_ms"]
            lines.append(
                f"| {point['x']} | {fmt_ms(c)} | {fmt_ms(t)} | "
                + (f"{c / t:.2f}" if c and t else "-") + " |")
        lines.append("")
    if run.get("errors"):
        lines += ["Errors:", ""] + [f"- {e}" for e in run["errors"]] + [""]
    return lines


def notes_from_file(args):
    if not args.notes_file:
        return []
    with open(args.notes_file) as handle:
        return [p for p in handle.read().split("\n\n") if p.strip()]


def fmt_ms(value):
    return "-" if value is None else f"{value:.3g} ms"


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    colors = ["tab:blue", "tab:green", "tab:purple", "tab:olive"]
    panels = (("batch", "batch size B  (T=100, D=64, H=256, K=64)",
               SWEEP_BATCHES, sweep_batch_config),
              ("hidden", "hidden size H  (T=100, B=32, D=64, K=64)",
               SWEEP_HIDDEN, sweep_hidden_config))
    for axis, (key, xlabel, ticks, _) in zip(axes, panels):
        torch_drawn = False
        for number, run in enumerate(runs):
            points = (run.get("sweep") or {}).get(key) or []
            _, core = run_label(run)
            xs = [p["x"] for p in points if p["crnn_ms"]]
            axis.plot(xs, [p["crnn_ms"] for p in points if p["crnn_ms"]],
                      "o-", color=colors[number % len(colors)],
                      label=f"crnn (OpenBLAS {core})")
            xs = [p["x"] for p in points if p["torch_ms"]]
            if xs:
                # PyTorch does not use OpenBLAS: one line per run would only
                # show the noise; draw the first run's, the others faint.
                axis.plot(xs, [p["torch_ms"] for p in points if p["torch_ms"]],
                          "s--", color="tab:red",
                          alpha=1.0 if not torch_drawn else 0.35,
                          label=f"PyTorch (run with {core})")
                torch_drawn = True
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(list(ticks))
        axis.set_xticklabels([str(t) for t in ticks])
        axis.set_xlabel(xlabel)
        axis.set_ylabel("training step, ms (log)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    quick = any(run.get("quick") for run in runs)
    figure.suptitle("LSTM training step (forward + BPTT + softmax "
                    "cross-entropy), float32, 1 thread"
                    + ("  [QUICK RUN]" if quick else ""))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="bench_train.py --json files")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="the Markdown file (default BENCHMARKS.md)")
    parser.add_argument("--plot", default=DEFAULT_PLOT,
                        help="the PNG (default benchmarks/lstm_train_sweep.png)")
    parser.add_argument("--note", action="append", default=[],
                        help="a paragraph to put under the title")
    parser.add_argument("--contention", metavar="PATH",
                        help="a bench_contention.py --json run: its table "
                             "goes into a section of its own")
    parser.add_argument("--notes-file", metavar="PATH",
                        help="paragraphs (blank-line separated) to put under "
                             "the title, after any --note")
    args = parser.parse_args(argv)
    if args.notes_file:
        with open(args.notes_file) as handle:
            args.note += [p.strip() for p in handle.read().split("\n\n")
                          if p.strip()]
    runs = []
    for path in args.runs:
        with open(path) as handle:
            runs.append(json.load(handle))
    has_sweep = any(points for run in runs
                    for points in (run.get("sweep") or {}).values())
    if has_sweep:
        plot(runs, args.plot)
    plot_link = os.path.relpath(args.plot, os.path.dirname(
        os.path.abspath(args.out)))
    quick = any(run.get("quick") for run in runs)
    lines = [
        "# crnn benchmarks" + (" (QUICK RUN)" if quick else ""),
        "",
        "Generated by `benchmarks/report.py` from `benchmarks/bench_train.py "
        "--json` runs; do not edit the numbers by hand. How it measures, and "
        "how to rerun it: [benchmarks/README.md](benchmarks/README.md). "
        "This file: `python benchmarks/report.py "
        + " ".join(os.path.relpath(path, ROOT) for path in args.runs)
        + (f" --notes-file {os.path.relpath(args.notes_file, ROOT)}"
           if args.notes_file else "")
        + (f" --contention {os.path.relpath(args.contention, ROOT)}"
           if args.contention else "")
        + (" --note ..." if len(args.note) > len(notes_from_file(args))
           else "") + "`.",
        "",
    ]
    for note in args.note:
        lines += [note, ""]
    lines += [
        "crnn against PyTorch in the same run: LSTM, tanh RNN and GRU "
        "training steps (forward + BPTT of one layer + linear output + "
        "softmax cross-entropy at every step), the LSTM forward pass, LSTM "
        "efficiency against the machine's own sgemm, peak memory of a "
        "training step, and one streaming LSTM step against "
        "`torch.nn.LSTMCell` and ONNX Runtime. Float32; configs are "
        "(T, B, D, H, K) = (sequence length, batch, input features, hidden "
        "units, output classes); `thr` is the thread count every library "
        "was given. Each row shows the issue's target for it and whether "
        "this run met it.",
        "",
    ]
    if has_sweep:
        lines += [f"![LSTM training-step time against batch size and hidden "
                  f"size, crnn and PyTorch]({plot_link})", ""]
    for run in runs:
        lines += run_section(run)
    if args.contention:
        from bench_contention import section
        with open(args.contention) as handle:
            lines += ["", "## On a busy machine (`bench_contention.py`)", ""]
            lines += section(json.load(handle))
    with open(args.out, "w") as handle:
        handle.write("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}" + (f" and {args.plot}" if has_sweep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
