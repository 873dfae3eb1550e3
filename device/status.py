"""What a device holds: installed generation, digests, trusted key, pending journal, rollback.

Read-only, like `rauc status`: nothing is written, no lock is taken.
"""
import hashlib
import os

from .applier import (JOURNAL_SUFFIX, PREVIOUS_SUFFIX, ROLLBACK_SUFFIX, SWAP_SUFFIX, UNDO_SUFFIX, ApplyError,
                      installed_generation, previous_generation, state_matches, weights_digest_of)
from .journal import JournalError, read_header
from .tflite import graph_digest_of
from .trust import TrustError, model_path_of, trusted_keys


def status(model_path: "str | os.PathLike", public_key: "str | None" = None, key_beside_model: bool = False) -> dict:
    """The device's state for `model_path`, as a JSON-ready dict.

    Keys: model (its real path), bytes, generation, state_matches (False:
    the state records another model's weights, the file was replaced),
    weights_digest, graph_digest, trusted_keys ([{path, sha256}], or
    {error} saying why there is none), pending_journal (a bool: `recover`
    has an update to finish), rollback (None, or {to_generation} when an
    undo record is there, or {error} when it is damaged).

    Raises ApplyError or ModelFormatError (ValueErrors, one line) for a
    missing or malformed model.

    Example (from the shell): python -m device status model.tflite --json
    """
    if not os.path.isfile(os.fspath(model_path)):
        raise ApplyError(f"model {os.fspath(model_path)} does not exist")
    model_path = model_path_of(model_path)
    report = {"model": model_path, "bytes": os.path.getsize(model_path),
              "generation": installed_generation(model_path), "state_matches": state_matches(model_path),
              "weights_digest": weights_digest_of(model_path).hex(),
              "graph_digest": graph_digest_of(model_path).hex(),
              "trusted_keys": _trusted_keys(model_path, public_key, key_beside_model),
              "pending_journal": any(os.path.lexists(model_path + s)
                                     for s in (JOURNAL_SUFFIX, ROLLBACK_SUFFIX, SWAP_SUFFIX)),
              "rollback": None}
    undo = model_path + UNDO_SUFFIX
    try:
        if os.path.lexists(undo):
            report["rollback"] = {"to_generation": read_header(undo, model_path).generation_from}
        elif os.path.lexists(model_path + PREVIOUS_SUFFIX):
            report["rollback"] = {"to_generation": previous_generation(model_path)}
    except (JournalError, ApplyError, OSError) as e:
        report["rollback"] = {"error": str(e)}
    return report


def format_status(report: dict) -> str:
    """`status` as the lines the CLI prints."""
    keys = report["trusted_keys"]
    rollback = report["rollback"]
    lines = [f"model            {report['model']} ({report['bytes']} bytes)",
             f"generation       {report['generation']}" + ("" if report["state_matches"] else
                                                          " (recorded for another model: the file was replaced; "
                                                          "recover --reset-state)"),
             f"weights digest   {report['weights_digest']}",
             f"graph digest     {report['graph_digest']}",
             "trusted keys     " + ("; ".join(f"{k['path']} (sha256 {k['sha256'][:16]})" for k in keys)
                                    if isinstance(keys, list) else f"none: {keys['error']}"),
             "pending journal  " + ("yes: run recover" if report["pending_journal"] else "no"),
             "rollback         " + ("none" if rollback is None else f"to generation {rollback['to_generation']}"
                                    if "to_generation" in rollback else f"damaged undo record: {rollback['error']}")]
    return "\n".join(lines)


def _trusted_keys(model_path, public_key, key_beside_model):
    try:
        paths = trusted_keys(model_path, public_key, key_beside_model)
    except TrustError as e:
        return {"error": str(e)}
    keys = []
    for path in paths:
        with open(path, "rb") as f:
            keys.append({"path": os.path.abspath(path), "sha256": hashlib.sha256(f.read(1 << 16)).hexdigest()})
    return keys
