"""tfdiff-device (or python -m device) convert | apply | recover | rollback | status | bench

    convert MODEL.keras OUT.tflite [--quantize int8] [--custom-objects M:NAME ...] [--signature M:FN]
                                              (server; needs TensorFlow)
    trust KEY.pem                             (install the server's public key: the device's trusted key)
    apply MODEL.tflite DIFF [--out OUT [--force]] [--strategy auto|inplace|copy] [--public-key KEY] [--json]
    recover MODEL.tflite [--discard | --reset-state] [--public-key K]   (finish an interrupted apply)
    rollback MODEL.tflite [--public-key K]    (back to the previous generation)
    status MODEL.tflite [--json]              (generation, digests, trusted keys, journal, rollback)
    bench MODEL.tflite [--diff DIFF] [--runs N]   (needs LiteRT: pip install ".[device]")

apply refuses a diff that is not signed by a trusted key (--public-key,
$TFDIFF_PUBLIC_KEY, or the key directory: $TFDIFF_KEY_DIR, default
/etc/tfdiff/keys, where `trust` installs keys), and one whose generation is
not above the model's installed one. Keys, key directories and the model's
directory writable by other users are refused. rollback restores the
generation before the last apply bit for bit, from the undo record that
apply keeps (MODEL.tflite.tfdiff-undo); the installed generation goes back too.

Exit status: 0 done; 1 refused (bad, tampered, unsigned, old or foreign
input: one line on stderr, the model unchanged); 2 an unexpected error (one
line; --debug shows the traceback); 3 an update committed but not finished
(a full disk, say): `recover` finishes it.
"""
import json
import sys
from argparse import ArgumentTypeError
from argparse import RawDescriptionHelpFormatter as RawDescription

from .cli import Parser, run


def _convert(args):
    from .converter import convert_file
    data = convert_file(args.model, args.out, quantize=args.quantize, custom_objects=args.custom_objects,
                        signature=args.signature)
    print(f"wrote {args.out} ({len(data)} bytes)")


def _trust(args):
    from .trust import install
    print(f"installed {install(args.key, args.key_dir)}: diffs signed by it now apply")


def _apply(args):
    from .applier import apply
    result = apply(args.model, args.diff, out=args.out, force=args.force, strategy=args.strategy,
                   **_trust_options(args))
    where = args.out or args.model
    if args.json:
        print(json.dumps({"status": result.status, "model": where, "generation": result.diff.generation,
                          "patched_elements": result.patched_elements, "strategy": result.strategy,
                          "target_digest": result.diff.target_digest.hex()}))
    elif result.status == "already":
        print(f"{where} already holds this diff's target model; nothing to do")
    else:
        how = {"inplace": "in place", "copy": "by a copy renamed over it", "out": "into a new file"}[result.strategy]
        print(f"patched {result.patched_elements} weights of {where} {how} (generation {result.diff.generation})")


def _recover(args):
    if args.reset_state:
        from .applier import reset_state
        reset_state(args.model)
        print(f"{args.model} is taken as shipped: generation 0, no undo record")
    elif args.discard:
        from .applier import discard
        print("discarded the journal" if discard(args.model) else "no journal to discard")
    else:
        from .applier import recover
        found = recover(args.model, **_trust_options(args))
        print("finished an interrupted update" if found else "nothing to recover")


def _rollback(args):
    from .applier import rollback
    print(f"rolled {args.model} back to generation {rollback(args.model, **_trust_options(args))}")


def _trust_options(args):
    return dict(public_key=args.public_key, allow_unsigned=args.allow_unsigned,
                key_beside_model=args.key_beside_model, max_diff_bytes=args.max_diff_bytes)


def _status(args):
    from .status import format_status, status
    report = status(args.model, public_key=args.public_key, key_beside_model=args.key_beside_model)
    print(json.dumps(report, indent=2) if args.json else format_status(report))


def _bench(args):
    if args.runs < 1 or args.threads < 1:
        raise ValueError(f"--runs and --threads must be at least 1. Received: {args.runs}, {args.threads}")
    from .bench import main as run_bench
    run_bench(args.model, args.diff, runs=args.runs, threads=args.threads, public_key=args.public_key,
              as_json=args.json)


def _parser():
    parser = Parser(prog="tfdiff-device", description=__doc__, formatter_class=RawDescription)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="Keras model -> patchable .tflite (server; needs TensorFlow)")
    convert.add_argument("model", help="a saved Keras model (.keras, .h5 or SavedModel)")
    convert.add_argument("out", help="the .tflite to write (with tfdiff's weight map)")
    convert.add_argument("--quantize", choices=["int8"], default=None,
                         help="int8: dynamic-range quantization (int8 kernels, per-channel scales); default float32")
    convert.add_argument("--custom-objects", nargs="+", metavar="MODULE:NAME",
                         help="custom layers, models or functions the saved model needs to load")
    convert.add_argument("--signature", metavar="MODULE:FUNCTION",
                         help="a function model -> {name: tf.function with an input signature} to export "
                              "instead of the model's call")
    convert.set_defaults(run=_convert)
    trust = commands.add_parser("trust", help="install a public key as a trusted key of this device")
    trust.add_argument("key", help="the server's Ed25519 public key (PEM)")
    trust.add_argument("--key-dir", help="the key directory (default $TFDIFF_KEY_DIR, else /etc/tfdiff/keys)")
    trust.set_defaults(run=_trust)
    apply = commands.add_parser("apply", help="patch a .tflite with a diff")
    apply.add_argument("model", help="the device's .tflite (patched in place unless --out)")
    apply.add_argument("diff", help="the received .tfdiff file")
    apply.add_argument("--out", help="write the patched model to this new file instead of in place")
    apply.add_argument("--force", action="store_true", help="let --out replace an existing regular file")
    apply.add_argument("--strategy", choices=("auto", "inplace", "copy"), default="auto",
                       help="in place with a journal, or a copy renamed over the model (the old one kept for "
                            "rollback); auto: whichever writes fewer bytes")
    _add_trust_options(apply)
    apply.add_argument("--json", action="store_true", help="print the result as one JSON line")
    apply.set_defaults(run=_apply)
    recover = commands.add_parser("recover", help="finish an interrupted apply")
    recover.add_argument("model", help="the device's .tflite")
    recover.add_argument("--discard", action="store_true",
                         help="delete a journal that recover refused as another model's, without replaying it")
    recover.add_argument("--reset-state", action="store_true",
                         help="take a replaced model as shipped: forget its recorded generation and undo record")
    _add_trust_options(recover)
    recover.set_defaults(run=_recover)
    rollback = commands.add_parser("rollback", help="restore the generation before the last apply")
    rollback.add_argument("model", help="the device's .tflite")
    _add_trust_options(rollback)
    rollback.set_defaults(run=_rollback)
    status = commands.add_parser("status", help="installed generation, digests, trusted key, journal, rollback")
    status.add_argument("model", help="the device's .tflite")
    status.add_argument("--public-key", help="report this key as the trusted one, as apply would use it")
    status.add_argument("--key-beside-model", action="store_true", help="as apply's")
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.set_defaults(run=_status)
    bench = commands.add_parser("bench", help="inference latency, and apply cost for a diff (needs LiteRT)")
    bench.add_argument("model", help="the .tflite to time")
    bench.add_argument("--diff", help="also time applying this diff (to copies; the model is untouched)")
    bench.add_argument("--runs", type=int, default=50, help="inference runs (default 50)")
    bench.add_argument("--threads", type=int, default=1, help="LiteRT threads (default 1)")
    bench.add_argument("--public-key", help="check the diff's signature as part of the apply cost")
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    bench.set_defaults(run=_bench)
    return parser


def _add_trust_options(command):
    """apply's, recover's and rollback's: a journal holds its diff, checked as a received one is."""
    command.add_argument("--public-key", help="the trusted Ed25519 public key (PEM) the diff must be signed by")
    command.add_argument("--allow-unsigned", action="store_true", help="skip the signature check (development only)")
    command.add_argument("--max-diff-bytes", type=_size, default=None, help="refuse larger diffs (default 64 MiB)")
    command.add_argument("--key-beside-model", action="store_true",
                         help="also trust MODEL.tfdiff-key.pem (anyone who can write the model's directory could "
                              "plant it)")


def main(argv=None):
    return run(_parser().parse_args(argv), "tfdiff-device")


def _size(text):
    """A byte count for --max-diff-bytes: a positive integer up to 1 TiB."""
    if not text.isdigit() or not 0 < int(text) <= 1 << 40:
        raise ArgumentTypeError(f"a byte count from 1 to {1 << 40}. Received: {text!r}")
    return int(text)


def _version():
    from . import __version__
    from .format import VERSIONS
    return f"tfdiff device {__version__} (reads diff format versions {', '.join(map(str, VERSIONS))})"


if __name__ == "__main__":
    sys.exit(main())
