"""No import circle among cloudtrain's modules, counting every import statement: at the
top, under TYPE_CHECKING, and inside functions (a lazy import still ties two modules)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cloudtrain"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the cloudtrain modules it imports. ``from pkg import name`` counts as an
    import of ``pkg.name`` when that is a module, else of ``pkg``. The package's public
    face (cloudtrain/__init__.py) re-exports everything, so it is a source, never a
    target: ``import cloudtrain.x`` runs it, but it is not part of x's design."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    targets.add(child if child in modules else node.module)
        graph[name] = {t for t in targets if t in modules and t not in ("cloudtrain", name)}
    return graph


def test_the_graph_sees_the_modules_and_their_imports() -> None:
    graph = import_graph()
    assert "cloudtrain.backends.aws.backend" in graph
    assert "cloudtrain.config" in graph["cloudtrain.training"]
    # a lazy import inside a function is an edge too
    assert "cloudtrain.backends.aws.s3" in graph["cloudtrain.backends.aws.backend"]


def test_no_import_circle_among_cloudtrain_modules() -> None:
    try:
        order = list(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")
    assert order


def test_a_circle_would_be_found() -> None:
    """The check itself can fail: a made-up circle is reported."""
    graph = import_graph()
    graph["cloudtrain.results"].add("cloudtrain.training")  # training imports results
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(graph).static_order())


#: Heavy SDKs that must be imported inside the functions that use them: never at a
#: module's top, so ``cloudtrain --help``, ``plan`` and an untracked run do not pay for
#: them (MLflow: ~2 s and SQLAlchemy's ORM).
LAZY_ONLY = ("mlflow",)


def top_level_imports(path: Path) -> set[str]:
    """The top-level package of every import at module level (not inside a function or a
    class body; ``if TYPE_CHECKING:`` blocks are not run, so they do not count)."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(ast.parse(path.read_text()).body)
    return found


def test_heavy_sdks_are_imported_only_where_they_are_used() -> None:
    sources = [
        path
        for folder in ("cloudtrain", "tasks", "flows")
        for path in (ROOT / folder).rglob("*.py")
    ]
    offenders = {
        str(path.relative_to(ROOT)): sorted(top_level_imports(path) & set(LAZY_ONLY))
        for path in sources
    }
    assert {path: names for path, names in offenders.items() if names} == {}
    assert "cloudtrain.tracking" in import_graph()["cloudtrain.report"]  # the graph sees it


def test_the_lazy_import_check_can_fail(tmp_path: Path) -> None:
    module = tmp_path / "eager.py"
    module.write_text("try:\n    import mlflow\nexcept ImportError:\n    pass\n")
    assert "mlflow" in top_level_imports(module)
    module.write_text("def f():\n    import mlflow\n")
    assert "mlflow" not in top_level_imports(module)


# --- what `cloudtrain plan --cloud aws` imports, in a new interpreter ----------------------

#: The SageMaker SDK's heavy modules (~1.9 s, ~200 MB: the API shapes, resources, JumpStart,
#: processing with pandas): `plan --cloud aws` reads the SDK's image tables without them.
HEAVY_SAGEMAKER = (
    "sagemaker.core.image_uris",
    "sagemaker.core.resources",
    "sagemaker.core.shapes",
    "sagemaker.core.processing",
    "sagemaker.core.jumpstart",
    "sagemaker.train",
    "pandas",
)

PLAN_AND_LIST_MODULES = """
import contextlib, io, json, sys
from cloudtrain.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(sys.argv[1:])
print(json.dumps({"exit": code, "out": out.getvalue()[-2000:], "modules": sorted(sys.modules)}))
"""


def plan_modules(
    tmp_path: Path, environment: dict[str, str], instance_type: str = "ml.m5.large"
) -> set[str]:
    """The modules a new interpreter holds after ``cloudtrain plan CONFIG --cloud aws``."""
    import json
    import subprocess
    import sys

    import yaml

    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "train.py").write_text("print('acc=1')\n")
    config = {
        "name": "imports",
        "cloud": "aws",
        "code": {"source_dir": "src", "entry_point": "train.py"},
        "data": {"train": "s3://shared-bucket/datasets/train/"},
        "metrics": ["acc"],
        "environment": environment,
        "compute": {"instance_type": instance_type, "spot": True, "max_run": 100},
        "aws": {"role": "arn:aws:iam::123456789012:role/R", "bucket": "my-bucket"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-c", PLAN_AND_LIST_MODULES, "plan", str(tmp_path / "c.yaml")],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    answer = json.loads(result.stdout)
    assert answer["exit"] == 0, answer["out"] + result.stderr
    assert "TrainingImage:" in answer["out"]
    return set(answer["modules"])


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(HEAVY_SAGEMAKER))


@pytest.mark.parametrize(
    "environment",
    [
        {"framework": "sklearn", "framework_version": "1.2"},
        {"framework": "pytorch", "framework_version": "2.3"},
        {"builtin": "kmeans"},
        {"image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:1.0"},
    ],
    ids=["sklearn", "pytorch", "builtin", "own-image"],
)
def test_plan_on_aws_does_not_import_the_heavy_sagemaker_modules(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    modules = plan_modules(tmp_path, environment)
    assert "cloudtrain.backends.aws.images" in modules  # the AWS plan did run
    assert heavy(modules) == []
    # botocore's service model is read with its loader: no session, client or boto3
    assert "botocore.model" in modules
    assert not {"botocore.session", "botocore.client", "boto3"} & modules


def test_the_heavy_module_check_can_fail(tmp_path: Path) -> None:
    """Hugging Face images are still the SDK's own rule: that plan imports image_uris."""
    modules = plan_modules(
        tmp_path, {"framework": "huggingface", "framework_version": "4.56"}, "ml.g5.xlarge"
    )
    assert "sagemaker.core.image_uris" in heavy(modules)
