"""Stubs that cannot drift: the shipped ``.pyi`` files name exactly the functions the modules
have, with the same parameters, and they type-check a typed example under ``mypy --strict``.

* ``xent_rs._core`` against ``_core.pyi``: names, and parameter names, kinds and defaults
  from each function's ``__text_signature__`` (annotations are not compared, so a binding
  that changes an argument's type but not its name still passes).
* ``xent_rs`` and ``xent_rs.reference`` against their stubs: every name in ``__all__`` is in
  the stub, every stubbed function exists, and every overload has the runtime parameters.
* ``xent_rs.calibration`` (a module or a package; keyed on ``__all__``, not on files):
  against its stub when it has one, else every public function and method must carry
  annotations for all parameters and the return.
* ``tests/typing_example.py`` passes ``mypy --strict`` against the stubs, and a snippet with
  deliberate type errors fails on exactly those lines.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import xent_rs as xr
from xent_rs import _core
from xent_rs import calibration as cal
from xent_rs import reference as ref

HERE = os.path.dirname(os.path.abspath(__file__))


def stub_path(module):
    """The ``.pyi`` next to a module's source (``__init__.pyi`` for a package), or None."""
    origin = importlib.util.find_spec(module.__name__).origin
    path = os.path.splitext(origin)[0] + ".pyi"
    if module.__name__ == "xent_rs._core":  # an extension module: _core.abi3.so
        path = os.path.join(os.path.dirname(origin), "_core.pyi")
    return path if os.path.exists(path) else None


def stub_functions(path):
    """{name: [parameters of each definition (several for overloads)]} at top level, each
    as ``stub_params`` gives them."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    typed_dicts = {node.name: [s.target.id for s in node.body if isinstance(s, ast.AnnAssign)]
                   for node in tree.body if isinstance(node, ast.ClassDef)
                   and any(getattr(b, "id", None) == "TypedDict" for b in node.bases)}
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out.setdefault(node.name, []).append(stub_params(node.args, typed_dicts))
    return out


def stub_names(path):
    """Every top-level name a stub defines (functions, classes, annotated or plain names)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname for a in node.names if a.asname)
    return names


def stub_params(args, typed_dicts):
    """(positional names in order, keyword-only names as a set, names that have a default).
    ``**options: Unpack[SomeOptions]`` stands for the keys of that (``total=False``)
    TypedDict: keyword-only parameters, each optional."""
    positional = [a.arg for a in args.posonlyargs + args.args]
    defaults = set(positional[len(positional) - len(args.defaults):] if args.defaults else [])
    defaults |= {a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None}
    kwonly = {a.arg for a in args.kwonlyargs}
    ann = args.kwarg.annotation if args.kwarg else None
    if isinstance(ann, ast.Subscript) and getattr(ann.value, "id", None) == "Unpack":
        keys = typed_dicts[ann.slice.id]
        kwonly |= set(keys)
        defaults |= set(keys)
    elif args.kwarg:
        kwonly.add("**" + args.kwarg.arg)
    return positional, kwonly, defaults


def runtime_params(fn):
    sig = inspect.signature(fn)
    ps = sig.parameters.values()
    positional = [p.name for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    kwonly = {p.name for p in ps if p.kind == p.KEYWORD_ONLY}
    defaults = {p.name for p in ps if p.default is not p.empty}
    return positional, kwonly, defaults


def public_functions(module):
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n[0] == "_"]
    return {n: getattr(module, n) for n in names
            if inspect.isfunction(getattr(module, n)) or inspect.isbuiltin(getattr(module, n))}


# ------------------------------------------------------------------------------ _core --

def test_core_stub_names_every_binding_and_nothing_else():
    path = stub_path(_core)
    assert path, "_core.pyi is missing"
    runtime = {n for n in dir(_core) if not n.startswith("_") and callable(getattr(_core, n))}
    assert set(stub_functions(path)) == runtime


@pytest.mark.parametrize("name", sorted(n for n in dir(_core) if not n.startswith("_")
                                        and callable(getattr(_core, n))))
def test_core_stub_parameters_match_the_text_signature(name):
    fn = getattr(_core, name)
    if not getattr(fn, "__text_signature__", None):
        pytest.skip(f"_core.{name} has no __text_signature__")
    (params,) = stub_functions(stub_path(_core))[name]
    assert params == runtime_params(fn)


# ---------------------------------------------------------- public modules with stubs --

@pytest.mark.parametrize("module", [xr, ref], ids=lambda m: m.__name__)
def test_stub_declares_every_public_name(module):
    path = stub_path(module)
    assert path, f"{module.__name__} has no stub"
    missing = set(module.__all__) - stub_names(path)
    assert not missing, f"{os.path.basename(path)} lacks {sorted(missing)}"


@pytest.mark.parametrize("module", [xr, ref], ids=lambda m: m.__name__)
def test_stubbed_functions_exist_with_the_runtime_parameters(module):
    stubs = stub_functions(stub_path(module))
    assert stubs
    for name, overloads in stubs.items():
        fn = getattr(module, name, None)
        assert callable(fn), f"{module.__name__}.{name} is stubbed but does not exist"
        positional, kwonly, defaults = runtime_params(fn)
        for pos, kw, _ in overloads:
            assert (pos, kw) == (positional, kwonly), name
        # The last overload (or the only definition) accepts every call the function does.
        assert overloads[-1][2] == defaults, name


def test_overloads_cover_every_flag_combination():
    """One overload per literal combination of reduction (reduced / "none") and the
    ``return_*`` flags, plus the plain-bool fallback."""
    stubs = stub_functions(stub_path(xr))
    for name, n_flags in (("cross_entropy", 3), ("binary_cross_entropy_with_logits", 2)):
        assert len(stubs[name]) == 2 * 2**n_flags + 1, name


# -------------------------------------------------------------------------- calibration --

def _annotation_gaps(fn, where):
    sig = inspect.signature(fn)
    gaps = [f"{where}({p.name})" for p in sig.parameters.values()
            if p.name not in ("self", "cls") and p.annotation is p.empty]
    if sig.return_annotation is sig.empty:
        gaps.append(f"{where} -> ?")
    return gaps


def test_calibration_is_typed():
    """With a stub: the stub names every public name and matches each function's
    parameters. Without one: every public function, and every method a public class
    defines itself, is annotated in the source."""
    public = list(cal.__all__)
    path = stub_path(cal)
    if path:
        assert not set(public) - stub_names(path)
        stubs = stub_functions(path)
        for name, fn in public_functions(cal).items():
            assert stubs[name][-1][:2] == runtime_params(fn)[:2], name
        return
    gaps = []
    for name in public:
        obj = getattr(cal, name)
        if inspect.isfunction(obj):
            gaps += _annotation_gaps(obj, name)
        elif inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if inspect.isfunction(member) and (not attr.startswith("_")
                                                   or attr == "__init__"):
                    if getattr(member, "__module__", "").startswith("xent_rs"):
                        gaps += _annotation_gaps(member, f"{name}.{attr}")
    assert not gaps, f"unannotated in xent_rs.calibration: {gaps}"


# --------------------------------------------------------------------------------- mypy --

def _run_mypy(path, stubs):
    env = dict(os.environ, MYPYPATH=str(stubs))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--hide-error-context",
         "--cache-dir", str(stubs / ".mypy_cache"), str(path)],
        capture_output=True, text=True, env=env, cwd=os.path.dirname(str(path)), timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def stubs_only(tmp_path_factory):
    """The imported package's stubs alone (``*.pyi`` and ``py.typed``), copied to a folder
    for ``MYPYPATH``: mypy checks against exactly what ships, whether the package is an
    installed wheel or a source tree, and never reads the implementation."""
    pytest.importorskip("mypy", reason="mypy is in the test extra (pip install xent_rs[test])")
    root = tmp_path_factory.mktemp("stubs")
    package = os.path.dirname(os.path.abspath(xr.__file__))
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(".pyi") or name == "py.typed":
                dest = root / "xent_rs" / os.path.relpath(folder, package)
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy(os.path.join(folder, name), dest / name)
    assert (root / "xent_rs" / "__init__.pyi").exists()
    return root


def test_typing_example_passes_mypy_strict(stubs_only):
    code, out = _run_mypy(os.path.join(HERE, "typing_example.py"), stubs_only)
    assert code == 0, out


NEGATIVE = textwrap.dedent("""\
    import numpy as np
    import xent_rs as xr
    z = np.zeros((2, 3))
    y = np.zeros(2, np.int64)
    loss, grad = xr.cross_entropy(z, y)
    n: int = xr.cross_entropy(z, y, reduction="none")
    xr.cross_entropy(z, y, reduction="avg")
    a, b = xr.cross_entropy(z, y, return_grad=True, return_hess=True)
    xr.softmax(z, axis=0)
    c, d = xr.binary_cross_entropy_with_logits(z, z)
    s: str = xr.get_num_threads()
    xr.cross_entropy(z, y, ignore_index="none")
    xr.cross_entropy(z, y, pos_weight=2.0)
""")
NEGATIVE_LINES = list(range(5, 14))  # every line after the setup is a type error


def test_type_errors_are_caught(stubs_only, tmp_path):
    path = tmp_path / "wrong.py"
    path.write_text(NEGATIVE)
    code, out = _run_mypy(path, stubs_only)
    assert code == 1, out
    flagged = sorted({int(line.split(":")[1]) for line in out.splitlines()
                      if line.startswith("wrong.py:") and ": error:" in line})
    assert flagged == NEGATIVE_LINES, out
