"""The Dockerfile, read as a structure: no Docker daemon runs here, so nothing is built.

What is checked is what a review would check: two stages on the official slim Python
image, the final one holding no compiler and running as a non-root user, the project
installed with the README's install line and the project's Prefect, the checkout where
the container deployments' pull step expects it, and a .dockerignore that keeps local
environments out but lets everything the install and the flows read in.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make", "cmake", "cc", "libc6-dev")


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def dockerfile_lines(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuations joined."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    return [
        (parts[0].upper(), parts[1].strip() if len(parts) > 1 else "")
        for parts in (line.strip().split(None, 1) for line in joined.splitlines())
        if parts
    ]


def stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ARG defaults, and each FROM's stage with its image's ARGs substituted."""
    defaults: dict[str, str] = {}
    found: list[Stage] = []
    for keyword, args in dockerfile_lines(text):
        if keyword == "FROM":
            words = args.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(image, name))
        elif keyword == "ARG" and not found:
            key, _, value = args.partition("=")
            defaults[key] = value
        elif found:
            found[-1].instructions.append((keyword, args))
    return defaults, found


DEFAULTS, STAGES = stages((REPO / "Dockerfile").read_text())
FINAL = STAGES[-1]


def arg_default(stage: Stage, name: str) -> str:
    values = [args.partition("=")[2] for args in stage.all("ARG") if args.startswith(f"{name}=")]
    assert values, f"no ARG {name}=... in stage {stage.name}"
    return values[-1]


def test_two_stages_on_the_official_slim_python() -> None:
    assert len(STAGES) >= 2
    assert all(stage.image == "python:3.11-slim" for stage in STAGES), [s.image for s in STAGES]
    builder = STAGES[0].name
    copied = [args for args in FINAL.all("COPY") if args.startswith("--from=")]
    assert copied == [f"--from={builder} /opt/venv /opt/venv"]  # the virtualenv, nothing else


def test_no_build_tools_in_the_final_stage() -> None:
    assert any("build-essential" in run for run in STAGES[0].all("RUN"))  # the builder has them
    for run in FINAL.all("RUN"):
        assert "apt-get install" not in run and "apk add" not in run, run
        assert not set(COMPILERS) & set(shlex.split(run.replace(";", " "))), run
        assert "pip install" not in run, run  # installing happens in the builder


def test_the_final_stage_runs_as_a_non_root_user() -> None:
    users = FINAL.all("USER")
    assert users, "the final stage sets no USER: it would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0"), users[-1]
    created = " ".join(FINAL.all("RUN"))
    assert f"--uid {user}" in created  # the user exists in the image
    # what a run writes belongs to that user; the code stays root's
    assert re.search(r"chown -R cloudtrain:cloudtrain examples/digits/data", created)
    assert not any("--chown" in args for args in FINAL.all("COPY"))


def test_the_install_line_is_the_readmes() -> None:
    """One canonical line: the README tells a person to run what the image runs."""
    installs = [run for run in STAGES[0].all("RUN") if run.startswith("python -m pip install")]
    assert installs[0] == "python -m pip install ."
    readme_commands = {
        line.split("#")[0].strip()
        for block in re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.S)
        for line in block.splitlines()
    }
    assert installs[0] in readme_commands, (
        f"README.md has no `{installs[0]}` line in a sh block (the image's install line)"
    )
    # the extras, when asked for, come next, through the same pip and the same constraint
    runs = STAGES[0].all("RUN")
    extras = runs[runs.index(installs[0]) + 1]
    assert extras == 'if [ -n "${EXTRAS}" ]; then python -m pip install ".[${EXTRAS}]"; fi'
    assert arg_default(STAGES[0], "EXTRAS") == "examples"


def test_the_images_prefect_is_the_projects() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    version = arg_default(STAGES[0], "PREFECT_VERSION")
    assert version == spec["prefect-version"] == importlib.metadata.version("prefect")
    assert arg_default(FINAL, "PREFECT_VERSION") == version
    env = " ".join(STAGES[0].all("ENV"))
    assert "PIP_CONSTRAINT=/tmp/constraints.txt" in env
    assert any(
        '"prefect==${PREFECT_VERSION}" > /tmp/constraints.txt' in r for r in STAGES[0].all("RUN")
    )


def test_the_checkout_is_where_the_container_deployments_work() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    workdir = FINAL.all("WORKDIR")[-1]
    containers = [d for d in spec["deployments"] if d["work_pool"]["name"] != "cloudtrain-process"]
    assert containers
    for deployment in containers:
        step = deployment["pull"][0]["prefect.deployments.steps.set_working_directory"]
        assert step == {"directory": workdir}, deployment["name"]
    assert "PATH=/opt/venv/bin:$PATH" in " ".join(FINAL.all("ENV"))  # `prefect`, `python`


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for the common cases: a pattern matches the path or a parent of it;
    `**/` matches any depth; `!` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        candidates = (
            [pattern, pattern.removeprefix("**/")] if pattern.startswith("**/") else [pattern]
        )
        for prefix in prefixes:
            tails = ["/".join(prefix.split("/")[i:]) for i in range(prefix.count("/") + 1)]
            names = tails if pattern.startswith("**/") else [prefix]
            if any(fnmatch.fnmatchcase(name, c) for name in names for c in candidates):
                verdict = not negate
    return verdict


def test_dockerignore_keeps_environments_out_and_the_project_in() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "node_modules/azurite/package.json",
        "examples/digits/.cloudtrain/records/x.json",
        "cloudtrain/__pycache__/a.pyc",
        "examples/digits/data/train.csv",
    ):
        assert ignored(path, patterns), path
    tracked = subprocess.run(
        [
            "git",
            "ls-files",
            "cloudtrain",
            "flows",
            "tasks",
            "examples",
            "pyproject.toml",
            "README.md",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "pyproject.toml" in tracked and "README.md" in tracked  # the build reads both
    assert [path for path in tracked if ignored(path, patterns)] == []
