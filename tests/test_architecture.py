"""The house's rules (docs/architecture.md), read off the code: every import goes to a lower floor (or stays in its
own room), no file is over 400 lines, no folder holds more than 35 % of the code. Each rule is also fed a broken
case and must see it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HOMES = ("common", "models", "dataset", "training", "inference", "demo", "studies")  # installed as epalm.<home>

# The floors, lowest first: a module may import from its own room or from any room of a lower floor. A module's
# room is the longest prefix that names it. models/ is a floor of several: helpers and the parts the bridge is
# made of first, the composite model and its files last.
FLOORS = [
    ["epalm.common"],
    ["epalm.models.model_source", "epalm.models.partitioned_params", "epalm.models.precision",
     "epalm.models.media_instances", "epalm.models.legacy_beam_search", "epalm.models.soft_prompt",
     "epalm.models.fewshot"],
    ["epalm.models.encoders", "epalm.models.language_models"],
    ["epalm.models.modalities"],
    ["epalm.models.config"],
    ["epalm.models.connectors"],
    ["epalm.models.injection"],
    ["epalm.models.epalm"],
    ["epalm.models.factory"],
    ["epalm.models.checkpoint", "epalm.models.param_count", "epalm.models"],
    ["epalm.dataset"],
    ["epalm.training"],
    ["epalm.inference"],
    ["epalm.demo"],
    ["epalm.studies"],
]
MAX_LINES = 400
MAX_SHARE = 0.35


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["epalm", *parts] if parts[0] in HOMES else parts)


def library_files() -> list[Path]:
    return sorted(p for home in HOMES for p in (REPO / home).rglob("*.py"))


def project_files() -> list[Path]:
    """Every Python file of the repository (library, benchmarks, tests, main.py, .ci)."""
    return sorted(p for p in REPO.rglob("*.py") if not any(part.startswith(".") and part != ".ci"
                                                            for part in p.relative_to(REPO).parts)
                  and p.relative_to(REPO).parts[0] not in ("build", "outputs", "data"))


def imports_of(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of an `epalm.` module, wherever it stands (inside functions and
    TYPE_CHECKING blocks too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("epalm"):
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names if alias.name.startswith("epalm"))
    return found


def floor_of(module: str) -> int | None:
    """The floor of the room whose prefix names `module` longest (`from a.b import c`: a.b.c or a.b)."""
    best = None
    for floor, rooms in enumerate(FLOORS):
        for room in rooms:
            if module == room or module.startswith(room + "."):
                if best is None or len(room) > len(best[1]):
                    best = (floor, room)
    return best[0] if best else None


def upward_imports(module: str, source: str) -> list[str]:
    mine = floor_of(module)
    problems = []
    for line, target in imports_of(source):
        theirs = floor_of(target)
        if theirs is None:
            problems.append(f"{module}:{line} imports {target}, which is in no floor of tests/test_architecture.py")
        elif mine is not None and theirs > mine:
            problems.append(f"{module}:{line} imports {target} (floor {theirs}) from floor {mine}")
    return problems


def test_every_library_module_is_on_a_floor_and_imports_only_downwards():
    problems = []
    for path in library_files():
        module = module_name(path)
        if floor_of(module) is None:
            problems.append(f"{module} is in no floor of tests/test_architecture.py")
        problems += upward_imports(module, path.read_text())
    assert not problems, "\n".join(problems)


def test_the_import_rule_sees_an_upward_import():
    assert upward_imports("epalm.common.errors", "from epalm.training.run import main\n")
    assert upward_imports("epalm.models.encoders.base", "def f():\n    from epalm.models.epalm import EPALM\n")
    assert upward_imports("epalm.models.config", "import epalm.models.connectors.base\n")
    assert not upward_imports("epalm.training.run", "from epalm.models.epalm import EPALM\nimport epalm.common\n")
    assert not upward_imports("epalm.demo.runner", "from epalm.demo.synthetic.build import build_image_dataset\n")


def line_counts(files: list[Path]) -> dict[Path, int]:
    return {path: len(path.read_text().splitlines()) for path in files}


def test_no_file_is_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p, n in line_counts(project_files()).items() if n > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def folder_shares(counts: dict[Path, int]) -> dict[str, float]:
    total = sum(counts.values())
    shares: dict[str, int] = {}
    for path, lines in counts.items():
        top = path.relative_to(REPO).parts[0]
        shares[top] = shares.get(top, 0) + lines
    return {folder: lines / total for folder, lines in shares.items()}


def test_no_folder_holds_more_than_35_percent_of_the_code():
    code = [p for p in project_files() if p.relative_to(REPO).parts[0] not in ("tests", ".ci")]
    shares = folder_shares(line_counts(code))
    assert max(shares.values()) <= MAX_SHARE, {k: round(v, 3) for k, v in sorted(shares.items())}


@pytest.mark.parametrize("counts, over", [
    ({REPO / "models" / "a.py": 40, REPO / "training" / "b.py": 60}, True),
    ({REPO / "models" / "a.py": 34, REPO / "training" / "b.py": 33, REPO / "dataset" / "c.py": 33}, False),
])
def test_the_share_rule_sees_a_folder_too_big(counts, over):
    assert (max(folder_shares(counts).values()) > MAX_SHARE) is over
