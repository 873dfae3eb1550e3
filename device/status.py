"""What a device holds: installed generation, digests, trusted key, pending journal, rollback.

Read-only, like `rauc status`: nothing is written, no lock is taken.
"""
import hashlib
import os

from .applier import (JOURNAL_SUFFIX, KEY_ENVIRONMENT, KEY_SUFFIX, UNDO_SUFFIX, installed_generation,
                      weights_digest_of)
from .journal import JournalError, read_header
from .tflite import graph_digest_of


def status(model_path: "str | os.PathLike", public_key: "str | None" = None) -> dict:
    """The device's state for `model_path`, as a JSON-ready dict.

    Keys: model, bytes, generation, weights_digest, graph_digest,
    trusted_key ({path, source, sha256} or None), pending_journal (a bool:
    `recover` has an update to finish), rollback (None, or {to_generation}
    when an undo record is there, or {error} when it is damaged).

    Raises ApplyError or ModelFormatError (ValueErrors, one line) for a
    missing or malformed model.

    Example (from the shell): python -m device status model.tflite --json
    """
    from .applier import ApplyError

    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise ApplyError(f"model {model_path} does not exist")
    report = {"model": os.path.abspath(model_path), "bytes": os.path.getsize(model_path),
              "generation": installed_generation(model_path),
              "weights_digest": weights_digest_of(model_path).hex(),
              "graph_digest": graph_digest_of(model_path).hex(),
              "trusted_key": _trusted_key(model_path, public_key),
              "pending_journal": os.path.lexists(model_path + JOURNAL_SUFFIX), "rollback": None}
    undo = model_path + UNDO_SUFFIX
    if os.path.lexists(undo):
        try:
            report["rollback"] = {"to_generation": read_header(undo, model_path).generation_from}
        except (JournalError, OSError) as e:
            report["rollback"] = {"error": str(e)}
    return report


def format_status(report: dict) -> str:
    """`status` as the lines the CLI prints."""
    key = report["trusted_key"]
    rollback = report["rollback"]
    lines = [f"model            {report['model']} ({report['bytes']} bytes)",
             f"generation       {report['generation']}",
             f"weights digest   {report['weights_digest']}",
             f"graph digest     {report['graph_digest']}",
             "trusted key      " + (f"{key['path']} ({key['source']}, sha256 {key['sha256'][:16]})" if key
                                    else "none: every signed diff will be refused"),
             "pending journal  " + ("yes: run recover" if report["pending_journal"] else "no"),
             "rollback         " + ("none" if rollback is None else f"to generation {rollback['to_generation']}"
                                    if "to_generation" in rollback else f"damaged undo record: {rollback['error']}")]
    return "\n".join(lines)


def _trusted_key(model_path, public_key):
    for source, path in (("--public-key", public_key), (KEY_ENVIRONMENT, os.environ.get(KEY_ENVIRONMENT)),
                         ("beside the model", model_path + KEY_SUFFIX)):
        if path and os.path.isfile(path):
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read(1 << 16)).hexdigest()
            return {"path": os.path.abspath(path), "source": source, "sha256": digest}
    return None
