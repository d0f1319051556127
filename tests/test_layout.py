"""Layout rules, read from the source: no import circle anywhere (lazy imports included), the LADD core never
imports the shapes world, one CLI idiom (ladd.cli), and run folders read only through bench.runfolder."""

import ast
import subprocess
import sys
from pathlib import Path

from bench.runfolder import CONFIG, MANIFEST, SCORES

REPO = Path(__file__).resolve().parents[1]
OWN = ("ladd", "bench", "annotate")  # the packages


def modules() -> dict[str, Path]:
    found = {}
    for package in OWN:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module of the tree that `name` imports anywhere in its file, inside functions too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from bench import runfolder` imports the module bench.runfolder
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {t for t in targets if t in known and t != name}


def test_no_module_imports_one_that_imports_it_back():
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    cycles = []

    def visit(node, trail):
        for target in sorted(graph[node]):
            if target in trail:
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in done:
                visit(target, trail + [target])
        done.add(node)

    done = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert not cycles, cycles


def is_core(name: str) -> bool:
    return name.startswith("ladd") and not name.startswith("ladd.shapes")


def test_the_ladd_core_imports_nothing_from_the_shapes_world():
    known = modules()
    for name, path in known.items():
        if is_core(name):
            shapes = sorted(t for t in imported(name, path, known) if t.startswith("ladd.shapes"))
            assert not shapes, f"{name} imports {shapes}"


def test_importing_the_core_commands_loads_no_shapes_module():
    probe = ("import sys, ladd.train, ladd.synth, ladd.sampling, ladd.export; "
             "print(sorted(m for m in sys.modules if m.startswith('ladd.shapes')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


def test_the_product_imports_no_experiment_or_script():
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m.split(".")[0] in ("experiments", "scripts") for m in names), name


def test_every_command_uses_the_one_cli_idiom():
    for name, path in modules().items():
        if name == "ladd.cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
        assert not defined & {"run_cli", "OneLineParser", "one_line"}, f"{name} re-defines ladd.cli"
        for node in tree.body:
            if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
                assert "run_cli(" in ast.unparse(node), f"{name}: the entry point does not go through run_cli"


def test_annotate_reads_run_folders_only_through_bench_runfolder():
    file_names = {MANIFEST, CONFIG, SCORES}
    for name, path in modules().items():
        if not name.startswith("annotate"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not strings & file_names, f"{name} names a run-folder file"
        calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert not any(c.endswith("read_parquet") for c in calls), f"{name} reads a parquet file itself"
