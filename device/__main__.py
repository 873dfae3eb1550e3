"""python -m device convert | apply | recover | bench

    convert MODEL.keras OUT.tflite [--quantize int8]   (server; needs TensorFlow)
    apply MODEL.tflite DIFF [--out OUT] [--public-key KEY | --allow-unsigned]
    recover MODEL.tflite [--discard]          (finish an interrupted apply)
    rollback MODEL.tflite                     (back to the previous generation)
    bench MODEL.tflite [--diff DIFF] [--runs N]

apply refuses a diff that is not signed by the device's trusted key
(--public-key, $TFDIFF_PUBLIC_KEY, or MODEL.tflite.tfdiff-key.pem), and one
whose generation is not above the model's installed one. rollback restores
the generation before the last apply bit for bit, from the undo record that
apply keeps (MODEL.tflite.tfdiff-undo); the installed generation goes back too.

Exit status: 0 done; 1 refused (bad, tampered, unsigned, old or foreign
input: one line on stderr, the model unchanged); 2 an unexpected error (one
line; --debug shows the traceback).
"""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m device", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="Keras model -> patchable .tflite (server; needs TensorFlow)")
    convert.add_argument("model", help="a saved Keras model (.keras, .h5 or SavedModel)")
    convert.add_argument("out", help="the .tflite to write (with tfdiff's weight map)")
    convert.add_argument("--quantize", choices=["int8"], default=None,
                         help="int8: dynamic-range quantization (int8 kernels, per-channel scales); default float32")
    apply = commands.add_parser("apply", help="patch a .tflite with a diff")
    apply.add_argument("model", help="the device's .tflite (patched in place unless --out)")
    apply.add_argument("diff", help="the received .tfdiff file")
    apply.add_argument("--out", help="write the patched model here instead of in place")
    apply.add_argument("--public-key", help="the trusted Ed25519 public key (PEM) the diff must be signed by")
    apply.add_argument("--allow-unsigned", action="store_true",
                       help="skip the signature check (development only)")
    apply.add_argument("--max-diff-bytes", type=int, default=None,
                       help="refuse larger diff files (default 64 MiB)")
    recover = commands.add_parser("recover", help="finish an interrupted apply")
    recover.add_argument("model", help="the device's .tflite")
    recover.add_argument("--discard", action="store_true",
                         help="delete a journal that recover refused as another model's, without replaying it")
    rollback = commands.add_parser("rollback", help="restore the generation before the last apply")
    rollback.add_argument("model", help="the device's .tflite")
    bench = commands.add_parser("bench", help="inference latency, and apply cost for a diff")
    bench.add_argument("model", help="the .tflite to time")
    bench.add_argument("--diff", help="also time applying this diff (to copies; the model is untouched)")
    bench.add_argument("--runs", type=int, default=50, help="inference runs (default 50)")
    bench.add_argument("--threads", type=int, default=1, help="LiteRT threads (default 1)")
    bench.add_argument("--public-key", help="check the diff's signature as part of the apply cost")
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            from .converter import convert_file
            data = convert_file(args.model, args.out, quantize=args.quantize)
            print(f"wrote {args.out} ({len(data)} bytes)")
        elif args.command == "apply":
            from .applier import apply as run_apply
            result = run_apply(args.model, args.diff, out=args.out, public_key=args.public_key,
                               allow_unsigned=args.allow_unsigned, max_diff_bytes=args.max_diff_bytes)
            where = args.out or args.model
            if result.status == "already":
                print(f"{where} already holds this diff's target model; nothing to do")
            else:
                print(f"patched {result.patched_elements} weights of {where} "
                      f"(generation {result.diff.generation})")
        elif args.command == "recover" and args.discard:
            from .applier import discard
            print("discarded the journal" if discard(args.model) else "no journal to discard")
        elif args.command == "recover":
            from .applier import recover as run_recover
            print("finished an interrupted update" if run_recover(args.model) else "nothing to recover")
        elif args.command == "rollback":
            from .applier import rollback as run_rollback
            print(f"rolled {args.model} back to generation {run_rollback(args.model)}")
        else:
            from .bench import main as run_bench
            run_bench(args.model, args.diff, runs=args.runs, threads=args.threads, public_key=args.public_key,
                      as_json=args.json)
    except (ValueError, OSError) as e:
        print(f"device: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a device prints one line, never a traceback
        if args.debug:
            raise
        print(f"device: unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


def _version():
    from . import __version__
    from .format import VERSIONS
    return f"tfdiff device {__version__} (reads diff format versions {', '.join(map(str, VERSIONS))})"


if __name__ == "__main__":
    sys.exit(main())
