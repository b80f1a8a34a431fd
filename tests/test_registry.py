"""Models as a registry (issue 22, item 6).

- crnn's Python modules import each other without a circle: the import graph
  of the installed package's ``*.py`` files is read with ``ast`` (every
  import statement, also those inside functions, counts) and must be
  acyclic; ``_registry`` and ``_files`` import nothing of crnn.
- The table of model kinds: each class's rows, the GRU's rows told apart by
  ``reset_after`` (True when a model or file does not say), to_torch's
  refusal of a kind PyTorch lacks, subclasses and other objects.
"""
import ast
import os

import crnn

PACKAGE = os.path.dirname(os.path.abspath(crnn.__file__))


def _modules():
    """The package's Python modules (read) and compiled ones (leaves)."""
    return {name.split(".")[0] for name in os.listdir(PACKAGE)
            if name.endswith((".py", ".so", ".pyd"))}


def _targets(node, modules):
    """The crnn modules (file names without .py) an import node names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return {name.split(".")[1] for name in names
                if name.startswith("crnn.") and name.split(".")[1] in modules} | \
            ({"__init__"} if "crnn" in names else set())
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level == 0 and (node.module or "").split(".")[0] != "crnn":
        return set()
    if node.level > 1:
        return set()
    parts = (node.module or "").split(".")
    if node.level == 0:
        parts = parts[1:]
    if parts and parts[0]:
        return {parts[0]} if parts[0] in modules else set()
    # "from . import a, b": submodules a, b, or names of the package itself
    found = {alias.name for alias in node.names if alias.name in modules}
    if len(found) < len(node.names):
        found.add("__init__")
    return found


def import_graph():
    modules = _modules()
    graph = {}
    for module in modules:
        if not os.path.exists(os.path.join(PACKAGE, module + ".py")):
            continue       # compiled: the .pyx files import no Python module
        with open(os.path.join(PACKAGE, module + ".py"), encoding="utf-8") as file:
            tree = ast.parse(file.read())
        edges = set()
        for node in ast.walk(tree):
            edges |= _targets(node, modules)
        edges.discard(module)
        graph[module] = edges
    return graph


def find_cycle(graph):
    """One import circle as a list of modules, or None."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert {"models", "io", "interop", "_registry", "_files"} <= set(graph)
    assert "_registry" in graph["io"] and "_registry" in graph["interop"]
    assert "_files" in graph["io"] and "_files" in graph["interop"]


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_registry_and_files_import_nothing_of_crnn():
    graph = import_graph()
    assert graph["_registry"] == set()
    assert graph["_files"] == set()


# ---------------------------------------------------------------- the table
def _gru(reset_after):
    """A crnn.GRU with `reset_after` (the setting, or its attribute before
    the setting exists)."""
    import inspect
    if "reset_after" in inspect.signature(crnn.GRU.__init__).parameters:
        return crnn.GRU(3, 4, 2, reset_after=reset_after, seed=0)
    model = crnn.GRU(3, 4, 2, seed=0)
    model.__dict__["reset_after"] = reset_after
    return model


def test_every_model_class_has_its_rows():
    from crnn import _registry
    for cls in (crnn.RNN, crnn.LSTM, crnn.GRU):
        assert _registry.model_class(cls.__name__) is cls
        assert _registry.kind_of(cls(3, 4, 2, seed=0)).class_name == cls.__name__


def test_gru_rows_follow_reset_after():
    from crnn import _registry
    after, before = _registry.kind_of(_gru(True)), _registry.kind_of(_gru(False))
    assert after.onnx_attributes == {"linear_before_reset": 1} and after.recurrent_bias
    assert after.torch == "GRU"
    assert before.onnx_attributes == {"linear_before_reset": 0}
    assert not before.recurrent_bias and before.torch is None
    # a model or file from before the setting: reset_after=True
    assert _registry.kind_named("GRU", {}) is after


def test_to_torch_refuses_a_gru_without_reset_after():
    model = _gru(False)
    try:
        model.to_torch()
    except ValueError as error:
        assert "reset_after=False" in str(error) and "PyTorch" in str(error)
    else:
        raise AssertionError("to_torch accepted a GRU with reset_after=False")


def test_a_subclass_is_its_crnn_kind_and_others_are_refused():
    from crnn import _registry

    class MyLSTM(crnn.LSTM):
        pass

    assert _registry.kind_of(MyLSTM(3, 4, 2, seed=0)).class_name == "LSTM"
    try:
        _registry.kind_of(object())
    except TypeError as error:
        assert "crnn.RNN, crnn.LSTM or crnn.GRU" in str(error)
    else:
        raise AssertionError("kind_of accepted an object")
