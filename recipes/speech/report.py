"""Table-1-style markdown and plots of a flywheel's results.json.

    python -m recipes.speech.report RUN_DIR    # (re)writes RUN_DIR/results.md and results.png
"""
import json
import os
import re
import sys

import numpy as np

from device.format import SIGNATURE_BYTES

# The flywheel's methods (recipes/speech/flywheel.py FlywheelConfig) by their column titles.
METHOD_TITLES = {"sparse": "Sparse", "hash": "Hash", "sparse-global": "Sparse-global", "lowrank": "Low-rank",
                 "seed": "Seed", "sparse-warm": "Sparse-warm", "sparse-sensitive": "Sparse-sensitive"}
BLC_METHODS = ("sparse", "hash")  # the paper's BLC: a pruned or HashedNets model from scratch


def blc_key(diff_key):
    """The row of the BLC a Diff row is compared with: Diff-hash-40x -> BLC-hash-40x."""
    return "BLC" + diff_key[len("Diff"):]


def _fmt(row, metric):
    if not row or metric not in row:
        return "-"
    return f"{100 * row[metric]:.1f}"


def _metric(results):
    """The task's metric, recorded in results.json (runs made before it was: by task name)."""
    return results.get("metric") or ("accuracy" if results["task"] == "fsc" else "wer")


def _points(low_high):
    low, high = (100 * v for v in low_high)
    return f"[{low:+.1f}, {high:+.1f}]"


def _provenance(results):
    records = results.get("provenance") or []
    if not records:
        return []
    first, last = records[0], records[-1]
    commits = sorted({r["commit"] + ("+dirty" if r["dirty"] else "") for r in records if r.get("commit")})
    m = last["machine"]
    # Each invocation records when its flywheel began, after the corpus and features were ready, and
    # not when it ended: a run's whole wall clock is in its log.
    started = (f"flywheel started {first['date']}" if len(records) == 1 else
               f"{len(records)} invocations, flywheels started {first['date']} to {last['date']}")
    return [f"Made by `{first['command']}` at commit {', '.join(c[:7] + c[40:] for c in commits)}, "
            f"{started}, on {m['cpu']} "
            f"({m['cores']} cores, {m['memory_gb']} GB), seeds {first['seeds']}.", ""]


def interval_table(results, columns):
    """Each row's difference to BL in points, with its paired 95 % interval over test speakers."""
    metric = _metric(results)
    keys = [key for _, key in columns] + ["BLinf"]
    if not any("minus_BL_ci95" in g["rows"].get(k, {}) for g in results["generations"] for k in keys):
        return []
    lines = ["", f"Difference to BL ({metric}, points) with its 95 % interval: a bootstrap over test speakers, "
             "the same speakers drawn for both models (BL's own interval in its column):", "",
             "| Gen | BL | " + " | ".join([title for title, _ in columns] + ["BL∞"]) + " |",
             "|---|---|" + "---|" * len(keys)]
    for g in results["generations"]:
        rows = g["rows"]
        bl = rows.get("BL", {})
        cells = [f"{100 * bl[metric]:.1f} {_points(bl['ci95']).replace('+', '')}" if "ci95" in bl else "-"]
        for key in keys:
            row = rows.get(key, {})
            cells.append(f"{100 * (row[metric] - bl[metric]):+.1f} {_points(row['minus_BL_ci95'])}"
                         if "minus_BL_ci95" in row and metric in bl else "-")
        lines.append(f"| {g['gen']} | " + " | ".join(cells) + " |")
    return lines


def blc_table(results, columns):
    """Each Diff's difference to its BLC in points, with its paired 95 % interval over test speakers."""
    metric = _metric(results)
    pairs = [(title[:-len(" Diff")], key, blc_key(key)) for title, key in columns
             if key.startswith("Diff-") and any("minus_BLC_ci95" in g["rows"].get(key, {})
                                                for g in results["generations"])]
    if not pairs:
        return []
    lines = ["", f"Diff minus its BLC ({metric}, points) with its 95 % interval, drawn as above:", "",
             "| Gen | " + " | ".join(title for title, _, _ in pairs) + " |", "|---|" + "---|" * len(pairs)]
    for g in results["generations"][1:]:
        rows = g["rows"]
        cells = [f"{100 * (rows[key][metric] - rows[blc][metric]):+.1f} {_points(rows[key]['minus_BLC_ci95'])}"
                 if "minus_BLC_ci95" in rows.get(key, {}) else "-" for _, key, blc in pairs]
        lines.append(f"| {g['gen']} | " + " | ".join(cells) + " |")
    return lines


def conditions_table(results, columns):
    """BL and the Diff rows on the test utterances rendered in each recording condition."""
    from .conditions import CONDITIONS, DESCRIPTIONS
    metric = _metric(results)
    present = [c for c in CONDITIONS if any(f"{c}_{metric}" in r for g in results["generations"]
                                            for r in g["rows"].values())]
    if not present:
        return []
    lines = ["", f"Recording conditions: {metric} (%) on the test utterances rendered "
             + "; ".join(f"**{c}**: {DESCRIPTIONS[c]}" for c in present)
             + ". Never used in training or for choosing a setting.", "",
             "| Gen | model | test | " + " | ".join(present) + " |", "|---|---|---|" + "---|" * len(present)]
    keys = ["BL"] + [key for _, key in columns if key.startswith("Diff")]
    for g in results["generations"]:
        for key in keys:
            row = g["rows"].get(key)
            if row and f"clean_{metric}" in row:
                lines.append(f"| {g['gen']} | {key} | {_fmt(row, metric)} | "
                             + " | ".join(_fmt(row, f"{c}_{metric}") for c in present) + " |")
    return lines


def markdown_table(results):
    """The paper's Table 1 layout: one row per generation, BLC and Diff per method and ratio."""
    metric = _metric(results)
    flywheel = results["flywheel"]
    blc_methods = flywheel.get("blc_methods")
    if blc_methods is None:
        blc_methods = [m for m in flywheel["methods"] if m in BLC_METHODS]
    columns = [(f"{METHOD_TITLES[m]} {r}x {kind}", f"{kind}-{m}-{r}x")
               for m in flywheel["methods"] for r in flywheel["ratios"] for kind in ("BLC", "Diff")
               if kind == "Diff" or m in blc_methods]
    posthoc = flywheel.get("posthoc") or []  # baselines: the delta of a fine-tuning, cut after the fact
    columns += [(f"Post-hoc {rule} {r}x", f"Posthoc-{rule}-{r}x") for rule in posthoc for r in flywheel["ratios"]]
    columns += [("FT (no budget)", "FT")] if posthoc else []
    label, size_of = _data_size(results)
    head = ["Gen"] + ([label] if label else []) + ["BL"] + [title for title, _ in columns] + ["BL∞"]
    quantized = (", int8 device models (every column measured on an int8 .tflite)"
                 if results["flywheel"].get("quantize") else "")
    lines = _provenance(results) + [
        f"{'Accuracy' if metric == 'accuracy' else 'WER'} (%), {results['task']}, scale {results['scale']}{quantized}"
        + (", test split" if any("valid_" + metric in r for g in results["generations"]
                                 for r in g["rows"].values()) else ""),
        "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in results["generations"]:
        rows = g["rows"]
        cells = [str(g["gen"])] + ([size_of(g)] if label else []) + [_fmt(rows.get("BL"), metric)]
        cells += [_fmt(rows.get(key), metric) for _, key in columns]
        cells.append(_fmt(rows.get("BLinf"), metric))
        lines.append("| " + " | ".join(cells) + " |")
    lines += interval_table(results, columns) + blc_table(results, columns) + conditions_table(results, columns)
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
            cells = [str(g["gen"])] + ([size_of(g)] if label else []) + [_fmt(rows.get("BL"), robust)]
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
            signature = SIGNATURE_BYTES if key.startswith("Diff") else 0
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


def _data_size(results):
    """(column title, generation -> cell) of what each generation trains on, from the fields it records."""
    generations = results["generations"]
    if any("domains" in g for g in generations):
        return "# dom.", lambda g: str(len(g.get("domains", [])))
    if any("hours" in g for g in generations):
        return "hours", lambda g: str(g.get("hours", "-"))
    return None, None


def _fmt_plain(value):
    return "-" if value is None else f"{value:.3g}"


def plot(results, path):
    """Metric per generation per method, and bytes per update, as one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = _metric(results)
    gens = [g["gen"] for g in results["generations"]]
    keys = sorted({k for g in results["generations"] for k in g["rows"]})
    colors = {key: f"C{i % 10}" for i, key in enumerate(keys)}  # one colour per series in both panels
    styles = {"BL": ("--", "s"), "BLinf": ((0, (1, 1)), "x")}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6))
    for key in keys:
        points = [(g["gen"], 100 * g["rows"][key][metric]) for g in results["generations"]
                  if key in g["rows"] and metric in g["rows"][key]]
        if points:
            style, marker = styles.get(key, ("-" if key.startswith("Diff") else "-.", "o"))
            left.plot(*zip(*points), linestyle=style, marker=marker, color=colors[key], label=key)
    left.set_xlabel("generation")
    left.set_ylabel(f"{metric} (%)")
    left.set_xticks(gens)
    # Legends below the axes, so that they hide no line and no bar.
    left.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    left.set_title(f"{results['task']}: {metric} per generation")
    diff_keys = [k for k in keys if k.startswith("Diff")]
    width = 0.8 / max(1, len(diff_keys))
    budgets = {}
    for i, key in enumerate(diff_keys):
        points = [(g["gen"] + i * width, g["rows"][key]["bytes"]) for g in results["generations"]
                  if key in g["rows"]]
        if points:
            right.bar(*zip(*points), width=width, color=colors[key], label=key)
        budgets.update({key.rsplit("-", 1)[-1]: g["rows"][key]["budget_bytes"] - SIGNATURE_BYTES
                        for g in results["generations"] if "budget_bytes" in g["rows"].get(key, {})})
    for i, (ratio, budget) in enumerate(sorted(budgets.items(), key=lambda item: -item[1])):
        right.axhline(budget, color="black", linestyle=("--", ":", "-.")[i % 3], linewidth=1,
                      label=f"budget {ratio} (less the signature)")
    updates = gens[1:]
    right.set_xticks([g + width * (len(diff_keys) - 1) / 2 for g in updates], [str(g) for g in updates])
    right.set_xlabel("generation")
    right.set_ylabel("bytes per update")
    right.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    right.set_title("diff bytes on the wire")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def methods_plot(result, metric, path):
    """The methods study: the metric against bytes on the wire, one line per row kind and step count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 5))
    lines = {}
    for row in result["summary"]:
        if row["bytes"] is not None and row["mean"] is not None:
            lines.setdefault((row["key"], row["steps"]), []).append((row["bytes"], 100 * row["mean"]))
    # A colour per row kind and a line style per step count: with a dozen kinds, colours alone repeat.
    kinds = sorted({key for key, _ in lines})
    step_counts = sorted({steps for _, steps in lines}, reverse=True)
    colours = plt.get_cmap("tab10" if len(kinds) <= 10 else "tab20")(np.arange(len(kinds)) % 20)
    styles = ["-", "--", ":", "-."]
    for (key, steps), points in sorted(lines.items()):
        points.sort()
        ax.plot([b / 1024 for b, _ in points], [m for _, m in points], marker="o", label=f"{key}, {steps} steps",
                color=colours[kinds.index(key)], linestyle=styles[step_counts.index(steps) % len(styles)])
    if result.get("BL_gen1") is not None:
        ax.axhline(100 * result["BL_gen1"], color="black", linestyle="--", label="BL (no budget)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("bytes on the wire (KiB)")
    ax.set_ylabel(f"{result.get('split', 'valid')} {metric} (%)")
    ax.set_title("Generation-1 update, per method")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(results, run_dir):
    table = markdown_table(results)
    with open(os.path.join(run_dir, "results.md"), "w") as f:
        f.write(table)
    plot(results, os.path.join(run_dir, "results.png"))
    return table


# A table in the docs is generated from the JSON its opening marker names, and nothing else:
#   <!-- table: fsc-demo-results.json -->  ...  <!-- /table -->
_BLOCK = re.compile(r"(<!-- table: (?P<name>[^ ]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def table_of(path):
    """The markdown table of a recorded results or study JSON."""
    with open(path) as f:
        recorded = json.load(f)
    if "study" in recorded:
        return study_markdown(recorded, recorded.get("metric", "accuracy")) + "\n"
    if recorded.get("recipe") == "text_commands":
        return _rows_table(recorded)
    return markdown_table(recorded)


def _rows_table(recorded):
    """One generation's rows (a recipe without a flywheel: text_commands), accuracy and the diff's bytes."""
    lines = [f"{recorded['method']} diff at {recorded['compression']:g}x, {recorded['steps']} steps, "
             f"{recorded['backend']} backend: {recorded['diff_bytes']} bytes signed of a "
             f"{recorded['budget_bytes']}-byte budget; device weights = fold's bit for bit: "
             f"{recorded['device_weights_digest_is_fold']}.", "",
             "| model (test rooms) | accuracy (%) |", "|---|---|"]
    lines += [f"| {name} | {100 * value:.1f} |" for name, value in recorded["accuracy"].items()]
    return "\n".join(lines) + "\n"


def docs_tables(doc_path, write=False):
    """[(json name, stale?)] of every generated table in a markdown file; `write` regenerates them."""
    folder = os.path.dirname(doc_path)
    with open(doc_path) as f:
        text = f.read()
    found = []

    def regenerate(match):
        body = table_of(os.path.join(folder, match["name"]))
        found.append((match["name"], body != match["body"]))
        return match[1] + body + match[4]

    new = _BLOCK.sub(regenerate, text)
    if write and new != text:
        with open(doc_path, "w") as f:
            f.write(new)
    return found


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m recipes.speech.report",
                                     description="Rewrite a run's results.md and results.png from its "
                                                 "results.json, and print the table; or, with --docs, "
                                                 "regenerate the tables a markdown file marks. Exit status: 0 "
                                                 "done, 1 no results.json in RUN_DIR.")
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a run directory holding results.json")
    parser.add_argument("--docs", metavar="MARKDOWN", help="regenerate every `<!-- table: X.json -->` block")
    args = parser.parse_args(argv)
    if args.docs:
        try:
            for name, stale in docs_tables(args.docs, write=True):
                print(f"{name}: {'regenerated' if stale else 'up to date'}")
        except (OSError, ValueError, KeyError) as e:
            print(f"report: error: {args.docs}: {e}", file=sys.stderr)
            return 1
        return 0
    if not args.run_dir:
        parser.error("give RUN_DIR or --docs MARKDOWN")
    path = os.path.join(args.run_dir, "results.json")
    if not os.path.isfile(path):
        print(f"report: error: {path} does not exist", file=sys.stderr)
        return 1
    with open(path) as f:
        print(write_report(json.load(f), args.run_dir))
    return 0



def _methods_markdown(result, metric, split):
    """The methods study: per step count, a row per method and a column per ratio (per-seed values: the JSON)."""
    summary = result["summary"]
    ratios = sorted({r["ratio"] for r in summary if r["ratio"]})
    bl = f"{100 * result['BL_gen1']:.1f}" if result.get("BL_gen1") is not None else "not run"
    lines = [f"Generation 1 on the {split} split, {metric} (%): mean over seeds {result['seeds']} "
             f"[95 % t-interval], and the file's KiB; BL at generation 1: {bl}"]

    def cell(row):
        if row is None:
            return "-"
        if row.get("refused"):
            return "does not fit"
        interval = "" if row["ci95"] is None else f" [{100 * row['ci95'][0]:.1f}, {100 * row['ci95'][1]:.1f}]"
        size = "" if row["bytes"] is None else f", {row['bytes'] / 1024:.1f}"
        return f"{100 * row['mean']:.1f}{interval}{size}"
    for steps in sorted({r["steps"] for r in summary}):
        at = {(r["key"], r["ratio"]): r for r in summary if r["steps"] == steps}
        lines += ["", f"{steps} steps:", "", "| row | " + " | ".join(f"{x}x" for x in ratios) + " |",
                  "|---|" + "---|" * len(ratios)]
        for key in sorted({key for key, ratio in at if ratio}):
            lines.append(f"| {key} | " + " | ".join(cell(at.get((key, x))) for x in ratios) + " |")
        for (key, ratio), row in sorted(at.items(), key=lambda item: item[0][0]):
            if not ratio:
                lines += ["", f"{key} ({steps} steps, no budget): {cell(row)}"]
    refused = sorted({(r["key"], r["ratio"], r["refused"]) for r in summary if r.get("refused")})
    if refused:
        lines += [""] + [f"- {key} at {ratio}x does not fit: {why}" for key, ratio, why in refused]
    return "\n".join(lines)


def study_markdown(result, metric):
    """A study's table (recipes/speech/study.py); metrics in %."""
    split = result.get("split", "test")
    if result["study"] == "seeds":
        lines = [f"{metric} (%) on test over seeds {result['seeds']}: mean [95 % t-interval]; difference to the "
                 "same seed's BL in points", "", f"| Gen | row | {metric} per seed | mean [95 %] | minus BL [95 %] |",
                 "|---|---|---|---|---|"]
        for row in result["rows"]:
            spread = " / ".join(f"{100 * v:.1f}" for v in row["values"])
            low, high = (100 * v for v in row["ci95"])
            diff = row.get("minus_BL")
            versus = (f"{100 * diff['mean']:+.1f} [{100 * diff['ci95'][0]:+.1f}, {100 * diff['ci95'][1]:+.1f}]"
                      if diff else "-")
            lines.append(f"| {row['gen']} | {row['key']} | {spread} | {100 * row['mean']:.1f} [{low:.1f}, {high:.1f}] "
                         f"| {versus} |")
        return "\n".join(lines)
    if result["study"] == "methods":
        return _methods_markdown(result, metric, split)
    if result["study"] == "curve":
        extra = [k for k in result["rows"][0] if k.endswith("_accuracy") or k.endswith("_wer")]
        seeded = len(result.get("seeds", [0])) > 1
        head = ["BL steps"] + ["seed"] * seeded + [f"{split} {metric}"] + extra + ["train s"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in result["rows"]:
            lines.append("| " + " | ".join([str(row["steps"])] + [str(row.get("seed"))] * seeded
                                           + [f"{100 * row[metric]:.1f}"] + [f"{100 * row[k]:.1f}" for k in extra]
                                           + [f"{row['train_seconds']:.0f}"]) + " |")
        if seeded:
            head = ["BL steps", f"{split} {metric}"] + extra
            lines += ["", f"Mean [95 % t-interval] over seeds {result['seeds']}:", "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for row in result["summary"]:
                lines.append("| " + " | ".join([str(row["steps"])] + [
                    f"{100 * row[k]['mean']:.1f} [{100 * row[k]['ci95'][0]:.1f}, {100 * row[k]['ci95'][1]:.1f}]"
                    for k in [metric] + extra]) + " |")
        return "\n".join(lines)
    head = ["diff steps", "learning rate", "pruning window", f"{split} {metric}", "bytes", "train s"]
    gen, bl = result.get("gen", 1), result.get("BL", result.get("BL_gen1"))  # BL_gen1: studies before 2026-12-03
    start = f", from {result['chain']} of generation {gen - 1}" if result.get("chain") else ""
    chain_row = (f"; the run's {result['chain']} at generation {gen}: {100 * result['chain_row']:.1f}"
                 if result.get("chain_row") is not None else "")
    lines = [f"{result['method']} {result['ratio']}x at generation {gen}{start}, {split} split; BL at generation "
             f"{gen}: " + (f"{100 * bl:.1f}" if bl is not None else "not run") + chain_row, "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        rate = "task's" if row["learning_rate"] is None else f"{row['learning_rate']:g}"
        lines.append(f"| {row['steps']} | {rate} | {row['window'][0]:g}-{row['window'][1]:g} | "
                     f"{100 * row[metric]:.1f} | {row['bytes']} | {row['train_seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":  # last: `main` uses every function above (study_markdown was defined after it)
    sys.exit(main())
