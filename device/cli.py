"""One error contract for tfdiff's two command lines (tfdiff-device and python -m tfdiff).

Exit status 0: done. 1: refused (bad input, a refused signature, a missing
optional package): one line on stderr, nothing changed. 2: an unexpected
error, one line (--debug shows the traceback).
"""
import sys

# Optional packages, and the extra of tfdiff that installs each.
EXTRAS = {"ai_edge_litert": "device", "tensorflow": "train", "tf_keras": "train",
          "tensorflow_model_optimization": "train"}


def run(args, prog):
    """Run `args.run(args)` under the contract; returns the exit status."""
    try:
        args.run(args)
    except ModuleNotFoundError as e:
        root = (e.name or "").split(".")[0]
        if root not in EXTRAS or args.debug:
            raise
        print(f"{prog}: error: {args.command} needs {root}, which this install lacks: "
              f"pip install \"tfdiff[{EXTRAS[root]}]\"", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a command line prints one line, never a traceback
        if args.debug:
            raise
        print(f"{prog}: unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0
