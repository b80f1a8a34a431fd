"""The documentation covers the public API (issue 23).

Every public class, function, method and property has a NumPy-style
docstring, and every public name is described in docs/api.md and listed in
the reference (docs/reference.rst).  The examples themselves run under
Sphinx's doctest builder in .ci/run; this file checks coverage, which the
doctest builder cannot see.  The docs/ checks skip where the tests run
without the repository (from an installed wheel).
"""
import inspect
import os
import re

import pytest

import crnn
import crnn.io
import crnn.optim
import crnn.trainer
from crnn._vjp import BuildingBlock, Cache
from crnn.models import RecurrentModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
SECTIONS = ("Parameters", "Returns", "Attributes", "Raises", "Notes", "Examples")


def public_objects():
    """(name, object) of the Python-level public API: the models and their
    methods and properties, the trainer, the optimizers, the file and
    framework functions."""
    objects = []
    classes = [crnn.RNN, crnn.LSTM, crnn.GRU, RecurrentModel, Cache, crnn.Trainer,
               crnn.History, crnn.trainer.NonFiniteError]
    classes += [getattr(crnn.optim, name) for name in crnn.optim.__all__
                if inspect.isclass(getattr(crnn.optim, name))]
    for cls in classes:
        objects.append((cls.__qualname__, cls))
        for name, member in vars(cls).items():
            if name.startswith("_"):
                continue        # __init__: the class docstring has its parameters
            if isinstance(member, property) or inspect.isfunction(member):
                objects.append((f"{cls.__qualname__}.{name}", member))
    # RecurrentModel's methods from its base BuildingBlock (_vjp)
    objects += [(f"RecurrentModel.{name}", member) for name, member in
                vars(BuildingBlock).items()
                if not name.startswith("_") and inspect.isfunction(member)]
    for module, names in ((crnn.io, ["save", "load", "save_checkpoint", "load_checkpoint"]),
                          (crnn.interop, ["from_torch", "to_torch", "to_onnx"]),
                          (crnn.optim, ["get"])):
        objects += [(f"{module.__name__}.{name}", getattr(module, name)) for name in names]
    return objects


@pytest.mark.parametrize("name, obj", public_objects(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_public_object_has_a_numpy_style_docstring(name, obj):
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    summary = doc.splitlines()[0]
    assert summary.strip() and len(summary) <= 79, (name, summary)
    sections = [section for section in SECTIONS
                if re.search(rf"^{section}\n-{{{len(section)}}}$", doc, re.M)]
    short = isinstance(obj, property) or name.endswith((".reset", ".lr", ".steps"))
    assert sections or short, f"{name}'s docstring has none of the sections {SECTIONS}"
    signature_names = []
    if inspect.isfunction(obj) or inspect.isclass(obj):
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            signature_names = [p for p in signature.parameters
                               if p not in ("self", "args", "kwargs", "options")]
    if "Parameters" in sections:
        documented = re.findall(r"^(\w[\w, ]*?)(?: :|$)", doc.split("Parameters\n", 1)[1], re.M)
        documented = {part.strip() for line in documented for part in line.split(",")}
        missing = [p for p in signature_names if p not in documented]
        assert not missing, f"{name} does not document {missing}"


def test_the_model_classes_explain_their_arguments():
    for cls in (crnn.RNN, crnn.LSTM, crnn.GRU):
        doc = inspect.getdoc(cls)
        for argument in ("output", "return_sequences", "dtype", "seed", "bidirectional"):
            assert re.search(rf"^{argument} :", doc, re.M), (cls.__name__, argument)
    assert inspect.getdoc(RecurrentModel.directions)
    assert inspect.getdoc(RecurrentModel.__init__) != inspect.getdoc(object.__init__)


docs_present = pytest.mark.skipif(not os.path.isdir(DOCS), reason="no docs/ beside the tests")


@docs_present
def test_every_public_name_is_in_the_api_page_and_the_reference():
    with open(os.path.join(DOCS, "api.md"), encoding="utf-8") as handle:
        api = handle.read()
    with open(os.path.join(DOCS, "reference.rst"), encoding="utf-8") as handle:
        reference = handle.read()
    names = [name for name in crnn.__all__ if name not in ("__version__", "optim")]
    names += [f"optim.{name}" for name in crnn.optim.__all__ if name not in ("Optimizer", "get")]
    for name in names:
        assert f"crnn.{name}" in api, f"docs/api.md does not describe crnn.{name}"
    for name, _ in public_objects():
        if "." in name and not name.startswith("crnn."):
            continue            # methods: listed through their class
        short = name.rsplit(".", 1)[-1]
        assert re.search(rf"\b{re.escape(short)}\b", reference), \
            f"docs/reference.rst does not list {name}"
    methods = [name for cls in (RecurrentModel, BuildingBlock)
               for name, member in vars(cls).items()
               if not name.startswith("_") and
               (inspect.isfunction(member) or isinstance(member, property))]
    for name in methods:
        assert f"`{name}`" in api or f"model.{name}" in api, \
            f"docs/api.md does not describe model.{name}"


@docs_present
def test_docs_stand_alone():
    """Nothing in the README or docs/ points outside the repository."""
    pages = [os.path.join(ROOT, "README.md")]
    pages += [os.path.join(DOCS, name) for name in os.listdir(DOCS)
              if name.endswith((".md", ".rst", ".py"))]
    for page in pages:
        with open(page, encoding="utf-8") as handle:
            text = handle.read()
        assert "shared/" not in text, page
        assert not re.search(r"\b(MODEL|API)\.md\b", text), page
