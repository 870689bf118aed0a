"""The project's set-up files agree with each other, and notebooks are committed without outputs."""
import glob
import json
import os
import re
import subprocess
import sys
import tomllib

import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..")


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def test_environment_yml_installs_this_repository_with_every_extra():
    with open(os.path.join(ROOT, "environment.yml")) as f:
        env = yaml.safe_load(f)
    deps = env["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    extras = set(pyproject()["optional-dependencies"])
    assert extras == {"book", "ogbench", "d4rl", "dev"}
    assert pip == [f"-e .[{','.join(sorted(extras, key=['book', 'ogbench', 'd4rl', 'dev'].index))}]"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    version = tuple(int(x) for x in python.split("=")[1].split("."))
    assert (3, 11) <= version < (3, 13), f"{python} is outside requires-python {pyproject()['requires-python']}"


def test_every_dependency_has_a_tested_range():
    project = pyproject()
    for req in project["dependencies"] + [r for rs in project["optional-dependencies"].values() for r in rs]:
        assert ">=" in req and "<" in req.replace("<=", ""), f"{req} needs a lower and an upper bound"


def test_notebooks_are_committed_without_outputs():
    notebooks = glob.glob(os.path.join(ROOT, "book", "**", "*.ipynb"), recursive=True)
    for path in notebooks:
        with open(path) as f:
            nb = json.load(f)
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, f"strip outputs of {path}"


def test_command_line_help_and_errors(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "fqlcore", *a], capture_output=True, text=True, cwd=tmp_path)
    assert run("--help").returncode == 0 and "train" in run("--help").stdout
    assert "--dataset" in run("train", "--help").stdout
    missing = run("train", "--dataset", "missing.npz")
    assert missing.returncode == 2 and "no dataset file" in missing.stderr
    assert "cube-single-play-singletask-task2-v0" in run("tasks").stdout


def test_command_line_trains_on_an_npz_file(tmp_path):
    from fqlcore import data, toy
    data.save_npz(toy.bandit_dataset(500), tmp_path / "bandit.npz")
    out = subprocess.run([sys.executable, "-m", "fqlcore", "train", "--dataset", "bandit.npz", "--steps", "20",
                          "--chunk", "10", "--out", "run"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "run" / "checkpoint.npz").exists() and (tmp_path / "run" / "history.csv").exists()
    with open(tmp_path / "run" / "history.csv") as f:
        assert f.readline().strip().split(",")[0] == "actor_loss" and len(f.readlines()) == 2


def test_code_lines_of_every_chapter_are_at_most_88_characters():
    """The HTML page shows about 88 characters of code; a longer line scrolls sideways."""
    long_lines = []
    for path in sorted(glob.glob(os.path.join(ROOT, "book", "*.ipynb"))):
        with open(path) as f:
            cells = json.load(f)["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                for line in "".join(cell["source"]).splitlines():
                    if len(line) > 88:
                        long_lines.append(f"{os.path.basename(path)} cell {i} ({len(line)}): {line[:60]}")
    assert not long_lines, f"{len(long_lines)} code lines over 88 characters:\n" + "\n".join(long_lines)


# Other projects' repositories that the book and the library may name (cited, not this one).
CITED_REPOSITORIES = {"seohongpark/fql", "openai/mujoco-py", "Farama-Foundation/Minari", "Farama-Foundation/D4RL",
                      "Farama-Foundation/minari-dataset-generation-scripts", "Farama-Foundation/Gymnasium-Robotics"}
GITHUB_REPO = re.compile(r"github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)")


def test_the_repository_url_is_named_in_config_and_every_mention_matches_it():
    """_config.yml's repository.url names this repository; a fork changes it there and this test lists the rest."""
    with open(os.path.join(ROOT, "_config.yml")) as f:
        url = yaml.safe_load(f)["repository"]["url"]
    match = GITHUB_REPO.fullmatch(url.removeprefix("https://").rstrip("/"))
    assert match, f"_config.yml's repository.url {url!r} is not https://github.com/<owner>/<repo>"
    ours = "/".join(match.groups())
    paths = [os.path.join(ROOT, p) for p in ("README.md", "pyproject.toml", "environment.yml", "_toc.yml", "Makefile",
                                             os.path.join(".ci", "run"))]
    for folder in ("book", "fqlcore", "tests", "benchmarks"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
            dirnames[:] = [d for d in dirnames if d not in ("_build", "__pycache__", ".ipynb_checkpoints")]
            paths += [os.path.join(dirpath, n) for n in filenames
                      if n.endswith((".ipynb", ".md", ".py", ".yml", ".yaml", ".toml", ".bib", ".cfg", ".txt"))]
    others = []
    for path in sorted(paths):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                for owner, repo in GITHUB_REPO.findall(line):
                    name = f"{owner}/{repo.removesuffix('.git').rstrip('.')}"
                    if name != ours and name not in CITED_REPOSITORIES:
                        others.append(f"{os.path.relpath(path, ROOT)}:{number}: github.com/{name}")
    assert not others, (f"_config.yml names the repository github.com/{ours}; these name another (change them, or "
                        "add a cited project to CITED_REPOSITORIES):\n" + "\n".join(others))
