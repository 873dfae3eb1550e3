"""python -m tfdiff keygen | sign | show: manage diff files on the server.

None of these commands needs TensorFlow. Exit status: 0 done, 1 a bad input
or a refused signature (one line on stderr), 2 an unexpected error.
"""
import argparse
import sys

from device import signing


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfdiff", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="write an Ed25519 key pair")
    keygen.add_argument("--private", default="tfdiff-signing.pem", help="private key path")
    keygen.add_argument("--public", default="tfdiff-signing.pub.pem", help="public key path")
    sign = commands.add_parser("sign", help="sign a diff file in place")
    sign.add_argument("diff")
    sign.add_argument("--key", required=True, help="private key (PEM)")
    show = commands.add_parser("show", help="print a diff's header and per-weight summary")
    show.add_argument("diff")
    show.add_argument("--public-key", help="verify the signature against this Ed25519 key (PEM)")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            signing.keygen(args.private, args.public)
            print(f"wrote {args.private} (keep secret) and {args.public} (install on devices)")
        elif args.command == "sign":
            diff = signing.sign(args.diff, args.key)
            print(f"signed {args.diff} ({diff.nbytes} bytes)")
        else:
            from device.format import decode, read_bounded
            from tfdiff.diff import Diff
            data = read_bounded(args.diff)
            diff = decode(data, Diff)
            if diff.signature is None:
                signature = "unsigned"
            elif args.public_key:
                signing.verify_bytes(data, args.public_key)
                signature = f"signed, verified with {args.public_key}"
            else:
                signature = "signed, NOT verified (give --public-key)"
            print(f"{diff.method} diff, generation {diff.generation}, {diff.nbytes} bytes, "
                  f"base {diff.base_digest.hex()[:12]} -> target {diff.target_digest.hex()[:12]}, {signature}")
            print(diff.summary())
    except (ValueError, OSError) as e:
        print(f"tfdiff: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one line, never a traceback
        print(f"tfdiff: unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
