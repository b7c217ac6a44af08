"""The package's shape: the remote-code bundle is self-contained, nothing imports in a cycle, old paths still work."""

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

import hf_metaembed

PACKAGE = Path(hf_metaembed.__file__).parent
# release 0.1's module paths: one shim file each at the package's top, `alias_module(__name__, "<new path>")`
MOVED_MODULES = {
    f"hf_metaembed.{path.stem}": match.group(1)
    for path in sorted(PACKAGE.glob("*.py"))
    if (match := re.search(r'alias_module\(__name__, "([\w.]+)"\)', path.read_text(encoding="utf-8")))
}

BUNDLE = PACKAGE / "modeling"
BUNDLE_ALLOWED = {"torch", "transformers", "safetensors"} | set(sys.stdlib_module_names)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in `path`, relative ones resolved."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:  # `from . import x`: each name may be a submodule
                    found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
                    continue
            else:
                module = node.module
            found.append((module, node.lineno))
    return found


def test_bundle_imports_only_torch_transformers_safetensors_stdlib_and_siblings():
    files = sorted(BUNDLE.glob("*.py"))
    assert {"configuration_metaembed", "modeling_metaembed", "processing_metaembed"} <= {p.stem for p in files}
    assert not [p for p in BUNDLE.iterdir() if p.is_dir() and p.name != "__pycache__"], "the bundle must stay flat"
    for path in files:
        for module, line in _imports(path):
            if module.startswith("hf_metaembed."):
                assert module.startswith("hf_metaembed.modeling."), f"{path.name}:{line} imports {module}"
                tree = ast.parse(path.read_text(encoding="utf-8"))
                relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.lineno == line]
                assert all(n.level == 1 for n in relative), f"{path.name}:{line}: siblings only, as `from .x import y`"
            else:
                assert module.split(".")[0] in BUNDLE_ALLOWED, f"{path.name}:{line} imports {module}"


def test_no_import_cycles_in_the_package():
    """Every import counts, function-level ones included (a lazy import still ties two modules together)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        targets = set()
        for module, _line in _imports(path):
            if module.startswith("hf_metaembed"):
                while module not in {_module_name(p) for p in PACKAGE.rglob("*.py")} and "." in module:
                    module = module.rpartition(".")[0]  # `from pkg import name` of a non-module name
                if module != name and not name.startswith(module + "."):
                    targets.add(module)
        graph[name] = targets

    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in graph.get(node, ()):
            if state.get(target) == 1:
                cycle = trail[trail.index(target) :] + [target] if target in trail else [node, target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_nothing_outside_the_bundle_is_imported_by_it_at_run_time():
    """A bundle file that imported tooling lazily (inside a function) would break remote code only when called."""
    for path in sorted(BUNDLE.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "import_module(" not in text, f"{path.name} imports by name"
        assert "hf_metaembed" not in {
            m.split(".")[0] for m, _ in _imports(path) if not m.startswith("hf_metaembed.modeling")
        }


def test_the_release_0_1_paths_are_all_shimmed():
    assert len(MOVED_MODULES) == 20
    assert MOVED_MODULES["hf_metaembed.cards"] == "hf_metaembed.integrations.cards"
    assert MOVED_MODULES["hf_metaembed.modeling_metaembed"] == "hf_metaembed.modeling.modeling_metaembed"


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_release_0_1_module_paths_still_import_and_name_their_new_place(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=re.escape(MOVED_MODULES[old])):
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED_MODULES[old])


def test_no_meta_path_finder_is_installed():
    assert not [finder for finder in sys.meta_path if type(finder).__module__.startswith("hf_metaembed")]
