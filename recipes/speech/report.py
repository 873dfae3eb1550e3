"""Table-1-style markdown and plots of a flywheel's results.json.

    python -m recipes.speech.report RUN_DIR    # (re)writes RUN_DIR/results.md and results.png
"""
import json
import os
import sys

METHOD_TITLES = {"sparse": "Sparse", "hash": "Hash"}


def _fmt(row, metric):
    if not row or metric not in row:
        return "-"
    return f"{100 * row[metric]:.1f}"


def markdown_table(results):
    """The paper's Table 1 layout: one row per generation, BLC and Diff per method and ratio."""
    metric = "accuracy" if results["task"] == "fsc" else "wer"
    flywheel = results["flywheel"]
    blc_methods = flywheel["methods"] if flywheel.get("blc_methods") is None else flywheel["blc_methods"]
    columns = [(f"{METHOD_TITLES[m]} {r}x {kind}", f"{kind}-{m}-{r}x")
               for m in flywheel["methods"] for r in flywheel["ratios"] for kind in ("BLC", "Diff")
               if kind == "Diff" or m in blc_methods]
    label = "# dom." if results["task"] == "fsc" else "hours"
    head = ["Gen", label, "BL"] + [title for title, _ in columns] + ["BL∞"]
    quantized = ", int8 device models (every column measured on an int8 .tflite)" if results["flywheel"].get("quantize") else ""
    lines = [f"{'Accuracy' if metric == 'accuracy' else 'WER'} (%), {results['task']}, scale {results['scale']}{quantized}",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in results["generations"]:
        rows = g["rows"]
        size = len(g.get("domains", [])) if results["task"] == "fsc" else g.get("hours", "-")
        cells = [str(g["gen"]), str(size), _fmt(rows.get("BL"), metric)]
        cells += [_fmt(rows.get(key), metric) for _, key in columns]
        cells.append(_fmt(rows.get("BLinf"), metric))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Bytes on the wire per update (Diff) and for the whole compressed model (BLC):", "",
              "| Gen | " + " | ".join(title for title, _ in columns) + " |",
              "|---|" + "---|" * len(columns)]
    for g in results["generations"][1:]:
        cells = [str(g["rows"].get(key, {}).get("bytes", "-")) for _, key in columns]
        lines.append(f"| {g['gen']} | " + " | ".join(cells) + " |")
    robust = "unseen_engine_accuracy"
    if any(robust in r for g in results["generations"] for r in g["rows"].values()):
        lines += ["", "Robustness: accuracy (%) on the same phrases spoken by the voices of a synthesizer "
                  "no training speaker used (festival):", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for g in results["generations"]:
            rows = g["rows"]
            size = len(g.get("domains", []))
            cells = [str(g["gen"]), str(size), _fmt(rows.get("BL"), robust)]
            cells += [_fmt(rows.get(key), robust) for _, key in columns] + [_fmt(rows.get("BLinf"), robust)]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Share of the byte budget used (file + 68-byte signature) / (4N / ratio), and the "
              "nominal compression (N / stored values) of the Diff rows:", "",
              "| Gen | " + " | ".join(title for title, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    for g in results["generations"][1:]:
        cells = []
        for _, key in columns:
            row = g["rows"].get(key, {})
            if "budget_bytes" not in row:
                cells.append("-")
                continue
            signature = 68 if key.startswith("Diff") else 0
            used = f"{100 * (row['bytes'] + signature) / row['budget_bytes']:.0f}%"
            cells.append(used + (f" ({row['nominal_compression']:g}x)" if "nominal_compression" in row else ""))
        lines.append(f"| {g['gen']} | " + " | ".join(cells) + " |")
    for field, title in (("rtf", "Real-time factor"), ("latency_ms", "LiteRT latency (ms per utterance)")):
        keyed = ["BLinf"] + [key for _, key in columns if key.startswith("Diff")]
        if any(field in g["rows"].get(key, {}) for g in results["generations"] for key in keyed):
            lines += ["", f"{title} of the device's model (BL∞: generation 0's .tflite; Diff: patched):", "",
                      "| Gen | " + " | ".join(keyed) + " |", "|---|" + "---|" * len(keyed)]
            for g in results["generations"]:
                cells = [_fmt_plain(g["rows"].get(key, {}).get(field)) for key in keyed]
                lines.append(f"| {g['gen']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt_plain(value):
    return "-" if value is None else f"{value:.3g}"


def plot(results, path):
    """Metric per generation per method, and bytes per update, as one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "accuracy" if results["task"] == "fsc" else "wer"
    gens = [g["gen"] for g in results["generations"]]
    keys = sorted({k for g in results["generations"] for k in g["rows"]})
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6))
    for key in keys:
        points = [(g["gen"], 100 * g["rows"][key][metric]) for g in results["generations"]
                  if key in g["rows"] and metric in g["rows"][key]]
        if points:
            style = "-" if key.startswith("Diff") else (":" if key.startswith("BLC") else "--")
            left.plot(*zip(*points), style, marker="o", label=key)
    left.set_xlabel("generation")
    left.set_ylabel(f"{metric} (%)")
    left.set_xticks(gens)
    # Legends below the axes, so that they hide no line and no bar.
    left.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    left.set_title(f"{results['task']}: {metric} per generation")
    diff_keys = [k for k in keys if k.startswith("Diff")]
    width = 0.8 / max(1, len(diff_keys))
    for i, key in enumerate(diff_keys):
        points = [(g["gen"] + i * width, g["rows"][key]["bytes"]) for g in results["generations"]
                  if key in g["rows"]]
        if points:
            right.bar(*zip(*points), width=width, label=key)
    updates = gens[1:]
    right.set_xticks([g + width * (len(diff_keys) - 1) / 2 for g in updates], [str(g) for g in updates])
    right.set_xlabel("generation")
    right.set_ylabel("bytes per update")
    right.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    right.set_title("diff bytes on the wire")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results, run_dir):
    table = markdown_table(results)
    with open(os.path.join(run_dir, "results.md"), "w") as f:
        f.write(table)
    plot(results, os.path.join(run_dir, "results.png"))
    return table


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m recipes.speech.report",
                                     description="Rewrite a run's results.md and results.png from its "
                                                 "results.json, and print the table. Exit status: 0 done, "
                                                 "1 no results.json in RUN_DIR.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory holding results.json")
    args = parser.parse_args(argv)
    path = os.path.join(args.run_dir, "results.json")
    if not os.path.isfile(path):
        print(f"report: error: {path} does not exist", file=sys.stderr)
        return 1
    with open(path) as f:
        print(write_report(json.load(f), args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
