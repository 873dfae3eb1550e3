"""python -m device convert | apply | recover | bench

    convert MODEL.keras OUT.tflite            (server; needs TensorFlow)
    apply MODEL.tflite DIFF [--out OUT] [--public-key KEY]
    recover MODEL.tflite                      (finish an interrupted apply)
    bench MODEL.tflite [--diff DIFF] [--runs N]

Errors print one line and exit with status 1; the model is then unchanged.
"""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m device", description="tfdiff on the device")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="Keras model -> patchable .tflite")
    convert.add_argument("model")
    convert.add_argument("out")
    apply = commands.add_parser("apply", help="patch a .tflite with a diff")
    apply.add_argument("model")
    apply.add_argument("diff")
    apply.add_argument("--out", help="write the patched model here instead of in place")
    apply.add_argument("--public-key", help="require a diff signed by this Ed25519 key (PEM)")
    recover = commands.add_parser("recover", help="finish an interrupted apply")
    recover.add_argument("model")
    bench = commands.add_parser("bench", help="inference latency, and apply cost for a diff")
    bench.add_argument("model")
    bench.add_argument("--diff")
    bench.add_argument("--runs", type=int, default=50)
    bench.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            from .converter import convert_file
            data = convert_file(args.model, args.out)
            print(f"wrote {args.out} ({len(data)} bytes)")
        elif args.command == "apply":
            from .applier import apply as run_apply
            result = run_apply(args.model, args.diff, out=args.out, public_key=args.public_key)
            where = args.out or args.model
            if result.status == "already":
                print(f"{where} already holds this diff's target model; nothing to do")
            else:
                print(f"patched {result.patched_elements} weights of {where} "
                      f"(generation {result.diff.generation})")
        elif args.command == "recover":
            from .applier import recover as run_recover
            print("finished an interrupted update" if run_recover(args.model) else "nothing to recover")
        else:
            from .bench import main as run_bench
            run_bench(args.model, args.diff, runs=args.runs, threads=args.threads)
    except (ValueError, OSError) as e:
        print(f"device: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
