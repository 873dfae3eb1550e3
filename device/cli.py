"""One error contract for tfdiff's two command lines (tfdiff-device and python -m tfdiff).

Exit status 0: done. 1: refused (bad input, a refused signature, a missing
optional package, a bad command line): one line on stderr, nothing changed.
2: an unexpected error, one line (--debug shows the traceback). 3: an
update committed but not finished (`recover` finishes it).
"""
import argparse
import sys

# Optional packages, and the extra of tfdiff that installs each.
EXTRAS = {"ai_edge_litert": "device", "tensorflow": "train", "tf_keras": "train",
          "tensorflow_model_optimization": "train"}


class Parser(argparse.ArgumentParser):
    """argparse, with a bad command line a refusal (status 1, one line), not status 2."""

    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message}\n")


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
    except Exception as e:  # noqa: BLE001
        if getattr(e, "exit_status", None) and not args.debug:  # an update committed, not finished
            print(f"{prog}: error: {e}", file=sys.stderr)
            return e.exit_status
        if args.debug:
            raise
        print(f"{prog}: unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0
