"""A step's record of the project files it loaded: imports (also lazy ones), opened files,
listed folders; and the comparison of such a record with a checkout."""

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cifar_pipeline.code_trace import CodeIdentityError, CodeTrace, changed_entries, file_sha256


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A small importable project: a package with an eager and a lazy import, data files."""
    root = tmp_path / "proj"
    package = root / "pkg"
    (package / "assets").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "eager.py").write_text("VALUE = 1\n")
    (package / "lazy.py").write_text("VALUE = 2\n")
    (package / "unused.py").write_text("VALUE = 3\n")
    (package / "main.py").write_text(
        "from pkg import eager\n\n\ndef later():\n    from pkg import lazy\n\n    return lazy.VALUE\n"
    )
    (package / "assets" / "a.txt").write_text("a")
    (package / "assets" / "b.txt").write_text("b")
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == "pkg" or m.startswith("pkg.")]:
        del sys.modules[name]


def test_records_eager_and_lazy_imports_but_not_unused_modules(project: Path) -> None:
    trace = CodeTrace(project)
    import pkg.main  # type: ignore[import-not-found]

    assert "pkg/lazy.py" not in trace.snapshot()
    pkg.main.later()
    record = trace.snapshot()
    assert {"pkg/__init__.py", "pkg/main.py", "pkg/eager.py", "pkg/lazy.py"} <= set(record)
    assert "pkg/unused.py" not in record
    assert record["pkg/lazy.py"] == file_sha256(project / "pkg" / "lazy.py")


def test_records_files_read_and_folders_listed(project: Path, tmp_path: Path) -> None:
    trace = CodeTrace(project)
    shutil.copytree(project / "pkg" / "assets", tmp_path / "copy")  # what the build step does
    record = trace.snapshot()
    assert {"pkg/assets/a.txt", "pkg/assets/b.txt", "pkg/assets/"} <= set(record)
    assert not any(entry.startswith(str(tmp_path / "copy")) for entry in record)


def test_changed_entries_name_changed_added_and_removed_files(project: Path, tmp_path: Path) -> None:
    trace = CodeTrace(project)
    shutil.copytree(project / "pkg" / "assets", tmp_path / "copy")
    (project / "pkg" / "eager.py").read_text()
    record = trace.snapshot()
    assert changed_entries(record, project) == []
    (project / "pkg" / "eager.py").write_text("VALUE = 10\n")
    (project / "pkg" / "assets" / "c.txt").write_text("new: the copy would differ")
    (project / "pkg" / "assets" / "a.txt").unlink()
    assert changed_entries(record, project) == [
        "pkg/assets/",
        "pkg/assets/a.txt (removed)",
        "pkg/eager.py",
    ]


def test_an_unreadable_recorded_file_is_an_error_naming_it(project: Path) -> None:
    record = {"pkg/eager.py": file_sha256(project / "pkg" / "eager.py")}
    (project / "pkg" / "eager.py").unlink()
    (project / "pkg" / "eager.py").mkdir()
    with pytest.raises(CodeIdentityError, match=r"pkg/eager\.py: cannot read it"):
        changed_entries(record, project)


def test_the_digits_source_and_scikit_learn_load_only_when_used() -> None:
    """What the end-to-end test of a lazily imported module relies on (sources/request.py)."""
    code = (
        "import sys; import cifar_pipeline.sources.request; "
        "print('cifar_pipeline.sources.digits' in sys.modules, 'sklearn' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
