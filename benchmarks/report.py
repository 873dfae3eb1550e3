"""BENCHMARKS.md and plots from benchmarks.json."""
import os


def _kb(n):
    return "-" if n is None else f"{n / 1024:.1f}"


def markdown(report):
    m = report["machine"]
    lines = ["# Benchmarks", "",
             f"Machine: {m['cpu']} ({m['cores']} cores, {m['memory_gb']} GB), {m['platform']}; "
             f"Python {m['python']}, TensorFlow {m['tensorflow']}, numpy {m['numpy']}; "
             f"commit {m['commit']}, {m['date']}."]
    for part, when in sorted(report.get("measured", {}).items()):
        command = f" by `{when['command']}`" if when.get("command") else ""  # older parts predate it
        lines.append(f"- `{part}` measured at commit {when['commit']}, {when['date']}{command}")
    lines.append("")
    if "wire" in report:
        lines += ["## Bytes on the wire per update (FSC flywheel)", "",
                  f"From the run in `{report.get('fsc_run', '?')}`. Accuracy is what the device ends up with.", "",
                  "| gen | method | KiB | accuracy (%) |", "|---|---|---|---|"]
        for row in report["wire"]:
            accuracy = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f}"
            bytes_ = "n/a (tool not installed)" if row["bytes"] is None else _kb(row["bytes"])
            lines.append(f"| {row['gen']} | {row['method']} | {bytes_} | {accuracy} |")
        lines.append("")
    if "apply" in report:
        lines += ["## Applying a diff on the device", "", *apply_markdown(report["apply"]).splitlines(), ""]
    if "train_step_ratio" in report:
        s = report["train_step_seconds"]
        lines += ["## Training step time (FSC demo model, same batch)", "",
                  "| model | ms per step | ratio to plain |", "|---|---|---|"]
        for name in s:  # plain first, then each method (a recorded file may predate a method)
            lines.append(f"| {name} | {1000 * s[name]:.1f} | {s[name] / s['plain']:.2f} |")
        lines.append("")
    if "train_keras3_ratio" in report:
        s, ratio = report["train_keras3_seconds"], report["train_keras3_ratio"]
        lines += ["## Training step time, Keras 3 against tf_keras (FSC demo model, same fit)", "",
                  "The same architecture built in each Keras, the same MSE `fit` on one batch; Keras 3 on the "
                  "TensorFlow backend.", "",
                  "| model | tf_keras ms per step | Keras 3 ms per step | Keras 3 / tf_keras |", "|---|---|---|---|"]
        for name in ratio:
            lines.append(f"| {name} | {1000 * s['tf_keras ' + name]:.1f} | {1000 * s['keras3 ' + name]:.1f} "
                         f"| {ratio[name]:.2f} |")
        lines.append("")
    if "latency" in report:
        r = report["latency"]
        lines += ["## Inference latency, patched against freshly converted", "",
                  f"patched {r['patched_ms']:.3f} ms, fresh conversion of the folded model {r['fresh_ms']:.3f} ms: "
                  f"ratio {r['ratio']:.2f}; identical files: {r['same_bytes']}.", ""]
    if "int8" in report:
        r = report["int8"]
        lines += ["## int8 against float32 device models (FSC flywheel)", "",
                  f"Float run `{r['float_run']}`, int8 run `{r['int8_run']}` (`--quantize int8`). BL: the "
                  "generation's fresh model, on its float32 or int8 .tflite; Diff: the patched device model "
                  "(int8: bit for bit the server's, `int8_bit_exact`). Bytes: the diff file, unsigned.", "",
                  "| gen | model | float32 acc. (%) | int8 acc. (%) | float32 bytes | int8 bytes | budget "
                  "| int8 bit-exact |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {row['gen']} | {row['model']} | {100 * row['float32_accuracy']:.1f} | "
                         f"{100 * row['int8_accuracy']:.1f} | {row['float32_bytes'] or '-'} | "
                         f"{row['int8_bytes'] or '-'} | {row['budget_bytes'] or '-'} | "
                         f"{'-' if row['int8_bit_exact'] is None else row['int8_bit_exact']} |")
        lines += ["", f"LiteRT latency of the patched models each chain ends with ({r['threads']} thread, median of "
                  f"{r['rounds']} rounds of {r['runs']} runs):", "",
                  "| ratio | float32 ms | int8 ms | int8 / float32 | float32 .tflite bytes | int8 .tflite bytes |",
                  "|---|---|---|---|---|---|"]
        for t in r["latency"]:
            lines.append(f"| {t['ratio']}x | {t['float32_ms']:.3f} | {t['int8_ms']:.3f} | {t['int8_to_float32']:.2f} | "
                         f"{t['float32_model_bytes']} | {t['int8_model_bytes']} |")
        lines.append("")
    if "fuzz" in report:
        r = report["fuzz"]
        lines += ["## Damaged models and diffs (benchmarks/fuzz.py)", "",
                  f"{r['cases']} random mutations of the golden model and of its signed and unsigned sparse "
                  "and hash diffs, through `python -m device apply` in place and by the copy strategy, and of "
                  "the journal an in-place apply left, through `recover`: "
                  f"{r['refused']} refused with one line and exit 1, {r['applied']} applied (mutations that "
                  f"left the files as they were), {r['unexpected']} unexpected (exit 2, an escaped exception "
                  f"or a multi-line message), {r['model_changed']} models changed by a refused apply.", ""]
    if "attack" in report:
        lines += ["## The attack review, replayed (benchmarks/attack.py)", "",
                  *attack_markdown(report["attack"]).splitlines(), ""]
    return "\n".join(lines)


def apply_markdown(rows):
    """The apply benchmark's table (benchmarks/applying.py): each diff in each mode (docs/BENCHMARKS.md holds one)."""
    lines = [f"A {rows[0]['params'] / 1e6:.1f}M-parameter float32 model at the paper's RNN-T shapes "
             f"({rows[0]['model_bytes'] / 2**20:.0f} MiB .tflite); `python -m device apply` in a fresh "
             "process, medians of repeats; peak RSS is the whole process, interpreter included. Modes: "
             "`inplace` (journal), `swap` (the copy strategy, renamed over the model), `out` (a new file). "
             "Written: bytes the kernel counted the applier sending to storage (/proc/self/io; none on a "
             "tmpfs); journal: the undo record an in-place apply keeps.", "",
             "| diff | where | mode | diff KiB | seconds | cp s | cp + fsync s | x cp + fsync | peak RSS MiB | "
             "written MiB | journal MiB | kept for rollback MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mib = [f"{r[k] / 2**20:.1f}" if k in r else "-" for k in ("written_bytes", "journal_bytes", "rollback_bytes")]
        fsync = r.get("cp_fsync_seconds")
        fsync_text, ratio = ("-", "-") if not fsync else (f"{fsync:.2f}", f"{r['seconds'] / fsync:.1f}")
        lines.append(f"| {r['method']} 10x | {r.get('setting', 'disk')} | {r['mode']} | {_kb(r['diff_bytes'])} | "
                     f"{r['seconds']:.2f} | {r['cp_seconds']:.2f} | {fsync_text} | {ratio} | "
                     f"{r['peak_rss_mb']:.0f} | {' | '.join(mib)} |")
    return "\n".join(lines) + "\n"


def attack_markdown(r):
    """The attack review's cases (benchmarks/attack.py), one table per group (docs/BENCHMARKS.md holds one)."""
    s, memory = r["summary"], r["memory"]
    lines = [f"Diffs applied that the configured key did not sign: {s['foreign_diffs_applied']} "
             f"(genuine diffs refused: {s['genuine_diffs_refused']}); planted or symlinked side files accepted: "
             f"{s['side_files_accepted']}; exit statuses that misstate the model on a full disk: "
             f"{s['exit_status_lies']}; exit 2 on bad input: {s['exit_2_on_bad_input']}; bytes left by "
             f"{r['killed_out']['runs']} killed `apply --out` runs after `recover`: {s['bytes_left_by_killed_runs']}.",
             "", "| case | expected | exit | model changed | message |", "|---|---|---|---|---|"]
    for c in r["keys"]:
        lines.append(f"| {c['case']} | {c['expect']} | {c['status']} | {c['applied']} | {c['message'][:90]} |")
    lines += ["", "| planted side file | exit | accepted | message |", "|---|---|---|---|"]
    for c in r["side_files"]:
        lines.append(f"| {c['case']} | {c['status']} | {c['accepted']} | {c['message'][:90]} |")
    lines += ["", "| full disk at | exit | model changed | exit status truthful |", "|---|---|---|---|"]
    for c in r["full_disk"]:
        lines.append(f"| {c['case']} | {c['status']} | {c['model_changed']} | {c['truthful']} |")
    lines += ["", f"A crafted unsigned diff of {memory['input_bytes'] / 2**20:.0f} MiB (one table of float32 zeros): "
              f"peak RSS {memory['tfdiff show']['peak_rss_mb']:.0f} MB for `tfdiff show`, "
              f"{memory['apply --allow-unsigned']['peak_rss_mb']:.0f} MB for an `--allow-unsigned` apply, against "
              f"{memory['runtime_mb']:.0f} MB for the runtime alone: {s['peak_over_input']:.2f}x the input "
              "above it."]
    return "\n".join(lines) + "\n"


def plot(report, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "wire" not in report:
        return
    rows = [r for r in report["wire"] if r["bytes"] is not None and r["accuracy"] is not None]
    last = max(r["gen"] for r in rows)
    # A legend, not labels at the points: the lossless tools sit on top of each other.
    fig, ax = plt.subplots(figsize=(10, 5))
    markers = "os^vDPX*<>hp"
    for i, r in enumerate(r for r in rows if r["gen"] == last):
        ax.scatter(r["bytes"] / 1024, 100 * r["accuracy"], marker=markers[i % len(markers)], s=45,
                   label=f"{r['method']} ({r['bytes'] / 1024:.0f} KiB, {100 * r['accuracy']:.1f} %)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    ax.set_xscale("log")
    ax.set_xlabel("KiB on the wire for the update")
    ax.set_ylabel("accuracy on the device (%)")
    ax.set_title(f"FSC update to generation {last}")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "wire.png"), dpi=100)
    plt.close(fig)


def write(report, out):
    with open(os.path.join(out, "BENCHMARKS.md"), "w") as f:
        f.write(markdown(report))
    plot(report, out)
