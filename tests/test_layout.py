"""The layers point one way, and private names stay in their module.

    device runtime  <-  device.converter  <-  tfdiff  <-  recipes, benchmarks

The runtime (everything in device/ but the converter) imports neither
TensorFlow nor tfdiff; the converter imports TensorFlow but not tfdiff (the
weight-naming contract is device/naming.py); tfdiff uses device's public
names; one recipe never imports another (shared code lives in recipes/speech).
"""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("device", "tfdiff", "recipes", "benchmarks")
HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tfdiff")


def sources(*packages):
    for package in packages:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    yield os.path.relpath(path, ROOT), ast.parse(open(path).read())


def module_of(relpath):
    return relpath[:-3].replace(os.sep, ".").removesuffix(".__init__")


def imports(tree, module):
    """(imported module, imported name or None) of every import, relative ones resolved."""
    package = module.rsplit(".", 1)[0] if not module.count(".") == 0 else module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                yield base, alias.name


def runtime_modules():
    return [(path, tree) for path, tree in sources("device") if not path.endswith("converter.py")]


@pytest.mark.parametrize("path,tree", runtime_modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_device_runtime_imports_neither_tensorflow_nor_tfdiff(path, tree):
    heavy = [m for m, _ in imports(tree, module_of(path)) if m.split(".")[0] in HEAVY]
    assert not heavy, f"{path} imports {heavy}"


def test_importing_the_runtime_loads_no_tensorflow():
    code = ("import sys, device, device.applier, device.format, device.signing, device.tflite, device.patch, "
            "device.status, device.trust, device.passes, device.state, device.files, device.digest, "
            "device.journal, device.__main__; "
            "print(sorted(m for m in ('tensorflow', 'tfdiff', 'tf_keras', 'device.converter') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_nothing_in_device_imports_tfdiff():
    """The converter too: it shares the naming contract through device/naming.py, so the layers point one way."""
    for path, tree in sources("device"):
        found = [m for m, _ in imports(tree, module_of(path)) if m.split(".")[0] == "tfdiff"]
        assert not found, f"{path} imports {found}"


def test_private_names_stay_in_their_module():
    crossings = []
    for path, tree in sources(*PACKAGES):
        module = module_of(path)
        aliases = {}
        for imported, name in imports(tree, module):
            if imported.split(".")[0] not in PACKAGES:
                continue
            if name and name.startswith("_") and not name.startswith("__"):
                crossings.append(f"{path}: from {imported} import {name}")
            same_package = imported.rsplit(".", 1)[0] == module.rsplit(".", 1)[0]
            last = imported.split(".")[-1]
            if last.startswith("_") and not last.startswith("__") and not same_package:
                crossings.append(f"{path}: imports private module {imported}")
            aliases[name or imported.split(".")[-1]] = imported
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")):
                crossings.append(f"{path}: {node.value.id}.{node.attr}")
    assert not crossings, "\n".join(crossings)


def test_one_recipe_never_imports_another():
    for path, tree in sources("recipes"):
        parts = path.split(os.sep)
        if len(parts) < 3 or parts[1] == "speech":
            continue
        for imported, _ in imports(tree, module_of(path)):
            if imported.startswith("recipes."):
                assert imported.split(".")[1] in (parts[1], "speech"), f"{path} imports {imported}"


def test_the_device_safety_tests_need_no_tensorflow():
    code = ("import sys, tests.test_device_safety, tests.device_world; "
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'ai_edge_litert') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_one_version_for_the_packages_the_wheel_and_the_citation():
    import re

    import device
    citation = re.search(r"^version: (\S+)$", open(os.path.join(ROOT, "CITATION.cff")).read(), re.M).group(1)
    setup = open(os.path.join(ROOT, "setup.py")).read()
    assert citation == device.__version__ and "version=VERSION" in setup and '"0.' not in setup.split("VERSION =")[0]


@pytest.mark.slow
def test_importing_tfdiff_leaves_tf_keras_and_the_keras_backend_as_they_were():
    """tfdiff trains with tf_keras and Keras 3; a user's `tf.keras` (Keras 3 since TF 2.16), the Keras
    backend and TF_USE_LEGACY_KERAS must stay what they were."""
    code = ("import os, keras, tensorflow as tf\n"
            "state = lambda: f'{tf.keras.Sequential.__module__},{keras.backend.backend()},'"
            "                f'{os.environ.get(\"TF_USE_LEGACY_KERAS\")}'\n"
            "before = state(); import tfdiff; tfdiff.wrap; tfdiff.SparseDiff\n"
            "from tfdiff import keras as ours; print(before, state(), ours.Sequential.__module__)")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    before, after, ours = out.stdout.split()
    assert before == after and before.startswith("keras") and ours.startswith("tf_keras"), out.stdout


def test_no_import_loop_between_files():
    """Every import, at the top of a file or inside a function, is an edge; no file reaches itself again."""
    trees = {module_of(path): tree for path, tree in sources(*PACKAGES)}
    graph = {}
    for module, tree in trees.items():
        edges = graph.setdefault(module, set())
        for imported, name in imports(tree, module):
            # `from package import module` reaches that module; `from module import name`, the module.
            target = next((t for t in (f"{imported}.{name}", imported) if t in trees), None)
            if target and target != module:
                edges.add(target)
    # Tarjan's strongly connected components: a component of more than one file is a loop.
    index, low, stack, on_stack, loops = {}, {}, [], set(), []

    def visit(m):
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for t in graph[m]:
            if t not in index:
                visit(t)
                low[m] = min(low[m], low[t])
            elif t in on_stack:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            component = []
            while True:
                t = stack.pop()
                on_stack.discard(t)
                component.append(t)
                if t == m:
                    break
            if len(component) > 1:
                loops.append(sorted(component))
    for m in sorted(graph):
        if m not in index:
            visit(m)
    assert not loops, loops
