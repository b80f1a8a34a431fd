"""The engine's shape, as docs/architecture.md promises it: no source file
over 700 lines, no function over 150, no internal function with more than
10 parameters, and the import layers (a module never imports one above it).

Exempt from the parameter count: the C API's entry points (api.pxd's
crnn_* and the generic bodies behind them, one to one), and the routines
that mirror a BLAS routine's own argument list (the shim's gemm and gemv,
the packed GEMM, and the team's split gemm)."""
import ast
import os
import re

import pytest

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                   "src", "crnn")
SOURCES = [name for name in sorted(os.listdir(SRC)) if os.path.isdir(SRC)
           and name.endswith((".py", ".pyx", ".pxd", ".h"))] if os.path.isdir(SRC) else []
needs_source = pytest.mark.skipif(not SOURCES, reason="run from a source tree (src/crnn)")

# a def / cdef / cpdef function (Cython or Python) or a C function definition
DEF = re.compile(r"^(\s*)(?:async\s+)?(?:c?p?def|cdef)\s+(?:inline\s+)?[^=(]*?\b(\w+)\s*\(")
C_DEF = re.compile(r"^(?:static\s+)?(?:CLONES\s+|CRNN_ALWAYS_INLINE\s+|inline\s+)*"
                   r"[A-Za-z_][\w\s\*]*\b(\w+(?:\)\([^)]*)?)\s*\($")


def read(name):
    with open(os.path.join(SRC, name), encoding="utf-8") as f:
        return f.read().splitlines()


def functions(name):
    """(name, first line, line count, parameter count) of every function
    with a body in a .py/.pyx file."""
    lines = read(name)
    found = []
    for i, line in enumerate(lines):
        match = DEF.match(line)
        if not match or line.rstrip().endswith(("nogil", ")")) and not line.rstrip().endswith(":") \
                and not _header_ends_with_colon(lines, i):
            continue
        indent = len(match.group(1))
        header, j = line.split("#")[0], i
        while not header.rstrip().endswith(":") and j + 1 < len(lines):
            j += 1
            header += " " + lines[j].split("#")[0].strip()
        params = header[header.index("(") + 1:header.rindex(")")]
        params = re.sub(r"\[[^\]]*\]", "", params)
        count = len([p for p in params.split(",") if p.strip()
                     and p.strip() not in ("self", "*")])
        end = j + 1
        while end < len(lines) and (not lines[end].strip()
                                    or len(lines[end]) - len(lines[end].lstrip()) > indent):
            end += 1
        found.append((match.group(2), i + 1, end - i, count))
    return found


def _header_ends_with_colon(lines, i):
    header = lines[i]
    j = i
    while j + 1 < len(lines) and not header.rstrip().endswith((":", "nogil")):
        j += 1
        header += lines[j]
    return header.rstrip().endswith(":")


@needs_source
def test_no_source_file_over_700_lines():
    long = {name: len(read(name)) for name in SOURCES if len(read(name)) > 700}
    assert not long, long


LONG_SIGNATURES = {
    ("_blas.pyx", "gemm"), ("_blas.pyx", "gemv"),
    ("_blas.pyx", "packed_gemm_pair"), ("_parallel.pyx", "team_gemm"),
    ("api.pyx", "sequence_forward"), ("api.pyx", "sequence_backward"),
    ("api.pyx", "cell_step"),
    # Trainer.fit: its keyword arguments are the public API (docs/training.md)
    ("trainer.py", "fit"),
    # crnn.torch's modules take torch.nn.LSTM's (RNN's) constructor arguments
    ("torch.py", "__init__"),
    # the models' constructors: their keyword arguments are the public API
    # (the shared settings, dropout among them, and the LSTM's peepholes and
    # proj_size: docs/api.md)
    ("_model.py", "__init__"), ("models.py", "__init__"),
} | {("api.pyx", f"crnn_{operation}_{suffix}")
     for operation in ("forward", "backward", "step") for suffix in ("f32", "f64")}


@needs_source
def test_no_function_over_150_lines_or_10_parameters():
    problems = []
    for name in SOURCES:
        if not name.endswith((".py", ".pyx")):
            continue
        for function, line, length, count in functions(name):
            if length > 150:
                problems.append(f"{name}:{line} {function} has {length} lines")
            if count > 10 and (name, function) not in LONG_SIGNATURES:
                problems.append(f"{name}:{line} {function} takes {count} parameters")
    assert not problems, "\n".join(problems)


# The layers, bottom-up: a compiled module may cimport only modules of a
# lower layer (or its own .pxd).  The Python facade sits above them all.
LAYERS = [
    {"_arrays", "_timeorder", "_blas", "_dropout"},  # helpers, the BLAS shim
    {"_parallel", "_cells"},        # the team; the cell table
    {"_plan"},                      # a call's plan
    {"_step"},                      # a step on the team
    {"_lane", "_loss", "_call"},    # a lane; the output layer and loss; a call
    {"_network", "_stream", "_optim", "api"},  # the three doors, optimizers
]


@needs_source
def test_compiled_modules_cimport_only_lower_layers():
    level = {module: i for i, layer in enumerate(LAYERS) for module in layer}
    problems = []
    for name in SOURCES:
        module, ext = os.path.splitext(name)
        if ext not in (".pyx", ".pxd") or module not in level:
            continue
        for line in read(name):
            match = re.match(r"\s*from \.(\w+) cimport", line)
            if match and match.group(1) != module:
                target = match.group(1)
                if target not in level:
                    problems.append(f"{name} cimports {target}, which has no layer")
                elif level[target] >= level[module]:
                    problems.append(f"{name} cimports {target} (layer "
                                    f"{level[target]} >= {level[module]})")
    assert not problems, "\n".join(problems)


@needs_source
def test_only_the_shim_cimports_cython_blas():
    users = [name for name in SOURCES if any("cython_blas" in line and "cimport" in line
                                            for line in read(name))]
    assert users == ["_blas.pxd", "_blas.pyx"], users


@needs_source
def test_the_lane_never_branches_on_the_cell_kind():
    for name in ("_lane.pyx", "_step.pyx", "_network.pyx", "api.pyx", "_stream.pyx"):
        code = "\n".join(read(name))
        assert not re.search(r"\bCELL_(RNN|LSTM|GRU)", code), name
        assert not re.search(r"(?<![.\w])kind\s*==", code), name
