"""coursekit's structure, read from its source with ast (nothing is imported): no import cycle, and one place
that runs the optimisation step."""

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "coursekit"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(path, package): path for path in sorted(package.rglob("*.py"))}


def imports_of(path: Path, known: set[str], package_dir: Path = PACKAGE) -> set[str]:
    """The coursekit modules ``path`` imports anywhere: at the top, inside functions, under TYPE_CHECKING.

    ``from coursekit.x import y`` counts as an import of ``coursekit.x.y`` when that is a module, else of
    ``coursekit.x``; relative imports are resolved against the module's package.
    """
    name = module_name(path, package_dir)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
    return {module for module in found if module in known and module != name}


@functools.cache
def import_graph(package: Path = PACKAGE) -> dict[str, frozenset[str]]:
    found = modules(package)
    return {name: frozenset(imports_of(path, set(found), package)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm), each sorted."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_parser_sees_top_level_function_level_and_relative_imports(tmp_path):
    graph = import_graph()
    assert "coursekit.encoder_decoder" in graph["coursekit.seq2seq"]  # top level
    assert "coursekit.viz" in graph["coursekit.translate"]  # inside plot_example
    assert "coursekit.data" in graph["coursekit.transformer"]  # under TYPE_CHECKING
    assert "coursekit.bert.model" in graph["coursekit.bert"]  # a package's face
    package = tmp_path / "coursekit"
    (package / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "sub/c.py"):
        (package / name).write_text("")
    (package / "sub" / "a.py").write_text("from . import c\nfrom .b import thing\n")
    (package / "sub" / "b.py").write_text("import os\n\ndef f():\n    from coursekit.sub.a import g\n")
    graph = import_graph(package)
    assert graph["coursekit.sub.a"] == {"coursekit.sub.b", "coursekit.sub.c"} and graph["coursekit.sub.b"] == {"coursekit.sub.a"}
    assert cycles(graph) == [["coursekit.sub.a", "coursekit.sub.b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_coursekit():
    found = cycles(import_graph())
    assert not found, f"modules that import each other, directly or around a circle: {found}"


def calls(path: Path) -> list[tuple[str, str, int]]:
    """(enclosing function's qualified name, method name, line) of every ``x.backward()``, ``x.step()`` and
    ``x.zero_grad()`` call, and of ``torch.autograd.backward``."""
    found = []

    def walk(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                walk(child, f"{scope}.{child.name}" if scope else child.name)
                continue
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and \
                    child.func.attr in ("backward", "step", "zero_grad"):
                found.append((scope, child.func.attr, child.lineno))
            walk(child, scope)

    walk(ast.parse(path.read_text(encoding="utf-8")), "")
    return found


def test_one_optimisation_step_and_every_trainer_calls_it():
    places = {(module_name(path), scope, method) for path in modules().values() for scope, method, _ in calls(path)}
    # The BERT notebook's step check holds the learners' wrong steps as mutants (no zero_grad, no clipping, a step
    # that updates nothing), which no shared step can express, and measures its probes' gradient norm; its right
    # step is proven equal to pretraining_step (tests/test_grading_bert.py). Nothing else may step on its own.
    mutants = {("coursekit.grading.bert", "_one_step", "zero_grad"), ("coursekit.grading.bert", "_one_step", "backward"),
               ("coursekit.grading.bert", "_one_step", "step"), ("coursekit.grading.bert", "_step_probes", "backward")}
    assert places - mutants == {("coursekit.train", "train_step", "zero_grad"),
                                ("coursekit.train", "train_step", "backward"), ("coursekit.train", "train_step", "step")}, \
        "backward / zero_grad / optimizer.step belong in coursekit.train.train_step alone; call it instead"
    # Each trainer reaches it through the shared loop (coursekit.train.train) or, for BERT pretraining with its
    # own loop, through pretraining_step.
    trainers = {("coursekit.train", "train"): "train_step", ("coursekit.bert.training", "pretraining_step"): "train_step",
                ("coursekit.bert.training", "pretrain"): "pretraining_step", ("coursekit.bert.training", "finetune"): "train",
                ("coursekit.translate", "train_model"): "train"}
    path_of = modules()
    for (module, function), callee in trainers.items():
        tree = ast.parse(path_of[module].read_text(encoding="utf-8"))
        body = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == function)
        called = {node.func.id for node in ast.walk(body) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
        assert callee in called, f"{module}.{function} must update through {callee}"
