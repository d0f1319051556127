"""Layout rules of bench and annotate, read from the source: no import circle (lazy imports included), one CLI
idiom (ladd.cli), and run folders read only through bench.runfolder."""

import ast
from pathlib import Path

from bench.runfolder import CONFIG, MANIFEST, SCORES

REPO = Path(__file__).resolve().parents[2]
OWN = ("bench", "annotate")  # the packages these rules are about; ladd is in the graph as what they import


def modules() -> dict[str, Path]:
    found = {}
    for package in ("ladd", *OWN):
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
                cycle = trail[trail.index(target):] + [target]
                if any(m.split(".")[0] in OWN for m in cycle):
                    cycles.append(" -> ".join(cycle))
            elif target not in done:
                visit(target, trail + [target])
        done.add(node)

    done = set()
    for start in sorted(graph):
        if start.split(".")[0] in OWN and start not in done:
            visit(start, [start])
    assert not cycles, cycles


def test_every_command_uses_the_one_cli_idiom():
    for name, path in modules().items():
        if name.split(".")[0] not in OWN:
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
