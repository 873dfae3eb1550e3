"""Benchmarks: bytes on the wire, apply cost, training overhead, patched-model latency.

`python -m benchmarks all --out DIR` writes DIR/BENCHMARKS.md, DIR/benchmarks.json
and PNG plots; each part also runs alone. Not part of the test suite, which
runs every part once with `--tiny`.
"""
