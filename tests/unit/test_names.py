"""Names other runs read are written once: in cifar_pipeline/names.py, nowhere else."""

from __future__ import annotations

import ast
from pathlib import Path

from cifar_pipeline import names

ROOT = Path(__file__).resolve().parents[2]
PROJECT_CODE = [
    *sorted((ROOT / "cifar_pipeline").rglob("*.py")),
    *sorted((ROOT / "steps").rglob("*.py")),
    *sorted((ROOT / "bench").rglob("*.py")),
    ROOT / "main.py",
]
NAMES = {
    value: name
    for name, value in vars(names).items()
    if (isinstance(value, str) and name.endswith(("_TAG", "_ARTIFACT", "_PREFIX")))
    or name in ("FINISHED", "FAILED", "KILLED", "RUNNING")
}


def docstrings(tree: ast.AST) -> set[int]:
    """The docstrings' nodes: prose may name a tag."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def literal_uses(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line: "value"` for each string in `path` that is, or quotes in a search filter,
    one of the names."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docstrings(
            tree
        ):
            continue
        quoted = [value for value in NAMES if f"`{value}`" in node.value]
        if node.value in NAMES or quoted:
            where = f"{path.relative_to(root)}:{node.lineno}"
            found += [f"{where}: {v!r} (names.{NAMES[v]})" for v in (quoted or [node.value])]
    return found


def test_project_code_names_tags_artifacts_and_statuses_through_names_only() -> None:
    assert len(NAMES) > 40  # the check has something to check
    found = [
        use for path in PROJECT_CODE if path != ROOT / "cifar_pipeline/names.py" for use in literal_uses(path)
    ]
    assert not found, "write these as constants of cifar_pipeline/names.py:\n" + "\n".join(found)


def test_the_check_finds_a_literal_tag(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    lines = [
        '"""Names `data.digest` in prose."""',
        'TAG = "data.digest"',
        "QUERY = \"tags.`pipeline.step` = 'x'\"",
        'OK = f"pipeline.{1}"',
    ]
    code = "\n".join(lines)
    sample.write_text(code)
    assert literal_uses(sample, tmp_path) == [
        "sample.py:2: 'data.digest' (names.DATA_DIGEST_TAG)",
        "sample.py:3: 'pipeline.step' (names.STEP_TAG)",
    ]
