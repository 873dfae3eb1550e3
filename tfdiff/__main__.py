"""python -m tfdiff keygen | sign | show | compose: manage diff files on the server.

None of these commands needs TensorFlow. Exit status: 0 done, 1 a bad input
or a refused signature (one line on stderr), 2 an unexpected error.
"""
import json
import sys

from device import signing
from device.cli import Parser, run


def _keygen(args):
    signing.keygen(args.private, args.public)
    print(f"wrote {args.private} (keep secret) and {args.public} (install on devices)")


def _sign(args):
    diff = signing.sign(args.diff, args.key, model=args.model, unbound=args.unbound)
    print(f"signed {args.diff} ({diff.nbytes} bytes)")


def _compose(args):
    from device.format import decode, read_bounded
    from tfdiff.diff import Diff, compose
    if args.key and not args.public_key:
        raise ValueError("--key signs the composed diff, so every input must verify first: give --public-key")
    chain = []
    for path in args.diffs:
        data = read_bounded(path)
        if args.public_key:  # over the raw bytes, before parsing, as a device does
            signing.verify_bytes(data, args.public_key)
        chain.append(decode(data, Diff))
    composed = compose(chain)
    composed.save(args.out)
    if args.key:
        composed = signing.sign(args.out, args.key, model=args.model)
    print(f"wrote {args.out}: generation {chain[0].generation} -> {composed.generation}, "
          f"{composed.nbytes} bytes against {sum(d.nbytes for d in chain)} for the chain of {len(chain)}")


def _show(args):
    from device.format import decode, read_bounded
    from tfdiff.diff import Diff
    data = read_bounded(args.diff)
    if args.public_key:  # before parsing: an unsigned or foreign diff is refused (exit 1)
        signing.verify_bytes(data, args.public_key)
    diff = decode(data, Diff)
    if args.public_key:
        signature = f"signed, verified with {args.public_key}"
    elif diff.signature is None:
        signature = "unsigned"
    else:
        signature = "signed, NOT verified (give --public-key)"
    if args.json:
        print(json.dumps({
            "method": diff.method, "format_version": diff.version, "generation": diff.generation,
            "bytes": len(data), "params": diff.num_params, "base_digest": diff.base_digest.hex(),
            "target_digest": diff.target_digest.hex(), "graph_digest": _graph(diff), "signature": signature,
            "entries": [{"name": e.name, "shape": list(e.shape), "method": e.method,
                         "stored": int(e.values.size)} for e in diff.entries]}, indent=2))
    else:
        print(f"{diff.method} diff, generation {diff.generation}, {len(data)} bytes, "
              f"base {diff.base_digest.hex()[:12]} -> target {diff.target_digest.hex()[:12]}, "
              f"graph {_graph(diff)}, {signature}")
        print(diff.summary(file_bytes=len(data)))


def _parser():
    parser = Parser(prog="python -m tfdiff", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="write an Ed25519 key pair")
    keygen.add_argument("--private", default="tfdiff-signing.pem", help="private key path")
    keygen.add_argument("--public", default="tfdiff-signing.pub.pem", help="public key path")
    keygen.set_defaults(run=_keygen)
    sign = commands.add_parser("sign", help="sign a diff file in place")
    sign.add_argument("diff", help="the .tfdiff to sign (rewritten atomically)")
    sign.add_argument("--key", required=True, help="private key (PEM)")
    sign.add_argument("--model", help="the device's .tflite this diff is for: the signature binds its graph")
    sign.add_argument("--unbound", action="store_true",
                      help="sign without binding a graph (the weights digest alone names the model)")
    sign.set_defaults(run=_sign)
    show = commands.add_parser("show", help="print a diff's header and per-weight summary")
    show.add_argument("diff", help="a .tfdiff file")
    show.add_argument("--public-key", help="verify the signature against this Ed25519 key (PEM)")
    show.add_argument("--json", action="store_true", help="print the header and entries as JSON")
    show.set_defaults(run=_show)
    compose = commands.add_parser("compose", help="one catch-up diff for a chain of diffs, bit-exact")
    compose.add_argument("diffs", nargs="+", help="the chain, oldest first")
    compose.add_argument("-o", "--out", required=True, help="the composed diff")
    compose.add_argument("--key", help="sign the composed diff with this private key (PEM); needs --public-key")
    compose.add_argument("--public-key", help="every input must be signed by this key (PEM), checked before parsing")
    compose.add_argument("--model", help="with --key: the .tflite the chain is for, if its diffs name no graph")
    compose.set_defaults(run=_compose)
    return parser


def main(argv=None):
    return run(_parser().parse_args(argv), "tfdiff")


def _graph(diff):
    from device.format import UNBOUND
    return "unbound" if diff.graph_digest == UNBOUND else diff.graph_digest.hex()[:12]


def _version():
    from device import __version__
    from device.format import VERSION
    return f"tfdiff {__version__} (writes diff format version {VERSION})"


if __name__ == "__main__":
    sys.exit(main())
