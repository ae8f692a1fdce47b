"""Docs that run as written (issue #21).

Every command line of the fenced shell blocks (```sh, bash, shell, console) of the four
user-facing docs is either checked here or matched by a named entry of ALLOWED, and a
line this test cannot classify fails it: a new doc command is checkable, or listed on
purpose. What a line may be:

- ``make X ... VAR=...``: ``make -n`` of exactly those arguments (a dry run) knows X;
- ``.venv/bin/python -m mod`` / ``.venv/bin/python script``: the module is found on the
  line's PYTHONPATH (relative to the repo), the script exists, and ``--help`` exits 0
  (run by this test's interpreter, which is the venv's);
- ``.venv/bin/<tool>``: a package of requirements*.txt / *.lock installs the tool;
- ``python3 script``: the system interpreter, before any venv exists: the script exists,
  imports only the standard library, and ``--help`` exits 0;
- bare ``python``, ``pip``, ``airflow`` (no venv named): only where the line's comment or
  a comment line above it in its block says it runs *in the deployment* (or container,
  image); modules and scripts they name are checked as above;
- ``docker compose ...``: needs Docker (ALLOWED), but the services it names exist in the
  compose files, and the command it runs in the image (``python -m mod``, ``python
  /opt/airflow/<path>``) is checked as above;
- ``NAME=value`` alone: an environment setting;
- anything else must start with an ALLOWED prefix.

Repository paths among the arguments must exist. Inline code spans of the four files
that start with ``make ``, ``.venv/bin/`` or ``PYTHONPATH=`` get the same checks; an unlabelled fence
whose first line is a command must be labelled. Two more tests hold the stories the docs
tell together: one admin user (local stack, compose, curl examples) and the same DAGs
unpaused (README and DEPLOYMENT.md step 5, OPERATORS.md). About two seconds in all.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from tests.support.markdown import FENCE, fenced_blocks

REPO = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/ANALYSTS.md", "docs/OPERATORS.md", "docs/DEPLOYMENT.md")
SHELL_LANGS = {"sh", "bash", "shell", "console"}

# Commands this test cannot run here, by prefix, with the reason. Keep it small: every
# entry must be used by some doc line (test_every_allowed_prefix_is_used).
ALLOWED = {
    "docker compose": "needs Docker Engine and the stack of docker-compose.yaml (services and image commands checked)",
    "curl": "talks to a running API server or simulator",
    "jq": "filters the JSON of the curl before it",
    "date": "coreutils, computes a docker compose argument",
    "sed": "coreutils, fills in a SQL template",
    "duckdb": "the analyst's own DuckDB CLI (not a dependency of this repository)",
}
DEPLOYMENT_NOTE = re.compile(r"\b(in|inside) the (deployment|container|image)\b", re.IGNORECASE)
BARE_IN_DEPLOYMENT = {"python", "python3", "pip", "airflow"}
BARE_VENV_TOOLS = {"pytest", "uv", "lint-imports"}  # never in a deployment: the venv's only
VENV_BIN = ".venv/bin/"
IMAGE_ROOT = "/opt/airflow/"  # the Dockerfile copies include/ (and dags/) there
REPO_PATH = re.compile(
    r"^(?:/opt/airflow/)?(?:(?:include|plugins|dags|tests|bench|docs|constraints|dist)/[\w./-]*"
    r"|requirements[\w-]*\.(?:txt|lock)|docker-compose[\w.-]*\.yaml|\.env[\w.]*\.example)$"
)
WHEEL = re.compile(r"^dist/mde_alert_ips-(?P<version>[^-]+)-py3-none-any\.whl$")


@dataclass
class Line:
    """One logical command line of a doc: continuations joined, its comment apart."""

    where: str
    text: str
    comment: str = ""
    context: str = ""  # the block's comment lines above it


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    allowed_used: set[str] = field(default_factory=set)
    help_runs: set[tuple] = field(default_factory=set)

    def ok(self, kind: str) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def fail(self, line: Line, why: str) -> None:
        self.problems.append(f"{line.where}: {line.text!r}: {why}")


# ---- Extraction ------------------------------------------------------------------------

COMMAND_START = re.compile(r"^(\$ )?(make|python3?|pip|pytest|airflow|docker|curl|sed|duckdb|\.venv/|PYTHONPATH=)\b")


def strip_comment(text: str) -> tuple[str, str]:
    """(command, comment) of one line: a ``#`` at a word start outside quotes."""
    command, comment, _ = scan(text)
    return command, comment


def scan(text: str) -> tuple[str, str, str | None]:
    """(command, comment, the quote left open at the end) of shell text."""
    quote, index = None, 0
    while index < len(text):
        char = text[index]
        if char == "\\" and quote != "'":
            index += 2
            continue
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or text[index - 1].isspace()):
            return text[:index].rstrip(), text[index + 1 :].strip(), None
        index += 1
    return text.rstrip(), "", quote


def block_lines(body: list[str], lang: str, where: str, first_line: int) -> list[Line]:
    lines, context, pending, start = [], [], "", 0
    for offset, raw in enumerate(body):
        text = raw.strip()
        if lang == "console":  # only prompts are commands; the rest is output
            if not (text.startswith("$ ") or pending):
                continue
            text = text[2:] if text.startswith("$ ") else text
        if not pending:
            start = first_line + offset
            if text.startswith("#"):
                context.append(text.lstrip("# "))
                continue
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        command, comment, open_quote = scan(pending + text)
        if open_quote:  # a quoted value over several lines
            pending += text + " "
            continue
        pending = ""
        if command:
            lines.append(Line(f"{where}:{start}", command, comment, " ".join(context)))
    return lines


def doc_lines(text: str, name: str) -> tuple[list[Line], list[str]]:
    """The command lines of a doc's shell blocks and inline `make`/.venv spans, and the
    unlabelled fences that hold commands."""
    lines, unlabelled = [], []
    rows = text.splitlines()
    for index, lang, body in fenced_blocks(rows):
        if lang in SHELL_LANGS:
            lines += block_lines(body, lang, name, index + 2)
        elif not lang and body and COMMAND_START.match(body[0].strip()):
            unlabelled.append(f"{name}:{index + 1}: a fence of commands without a language: label it ```bash")
    # The prose: fenced rows blanked, so that line numbers stay.
    in_fence, kept = False, []
    for row in rows:
        if FENCE.match(row):
            in_fence = not in_fence
        kept.append("" if in_fence or FENCE.match(row) else row)
    prose = "\n".join(kept)
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose):
        span = " ".join(match.group(1).split())
        if span.startswith(("make ", VENV_BIN, "PYTHONPATH=")) or span == "make":
            line_no = prose.count("\n", 0, match.start()) + 1
            lines.append(Line(f"{name}:{line_no} (inline)", span))
    return lines, unlabelled


# ---- Shell words -----------------------------------------------------------------------


def split_top_level(text: str) -> tuple[list[str], list[str]]:
    """(simple commands split at | && || ;, the inner commands of $(...)), outside quotes."""
    parts, substitutions, current = [], [], []
    quote, depth, inner_start, index = None, 0, 0, 0
    while index < len(text):
        char = text[index]
        if quote == "'":
            quote = None if char == "'" else quote
        elif char == "\\":
            current.append(text[index : index + 2])
            index += 2
            continue
        elif text.startswith("$(", index) and quote != "'":
            if depth == 0:
                inner_start = index + 2
            depth += 1
            current.append("$(")
            index += 2
            continue
        elif char == ")" and depth:
            depth -= 1
            if depth == 0:
                substitutions.append(text[inner_start:index])
        elif depth:
            pass
        elif char in "'\"":
            quote = None if quote == char else (quote or char)
        elif not quote and char in "|&;":
            parts.append("".join(current))
            current = []
            index += 2 if text[index : index + 2] in ("||", "&&") else 1
            continue
        current.append(char)
        index += 1
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()], substitutions


def words_of(command: str) -> list[str]:
    # A substitution is one opaque word here (its inner command is classified on its own).
    return shlex.split(re.sub(r"\$\((?:[^()]|\([^()]*\))*\)", "SUBSTITUTION", command))


ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


# ---- Checks ----------------------------------------------------------------------------


@lru_cache(maxsize=None)
def make_problem(arguments: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> str | None:
    """Why `make <arguments>` would not run here (a dry run), or None."""
    child = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    child.update(dict(env))
    proc = subprocess.run(["make", "-n", "--no-print-directory", *arguments], cwd=REPO, env=child,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return f"make -n exits {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}"
    return None


@lru_cache(maxsize=None)
def module_found(module: str, pythonpath: tuple[str, ...]) -> bool:
    """Whether `python -m module` finds it with PYTHONPATH=pythonpath, run in the repo."""
    roots = [REPO / p for p in pythonpath] + [REPO]
    parts = module.split(".")
    for root in roots:
        base = root.joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__main__.py").is_file():
            return True
    return False


def stdlib_only(script: Path) -> list[str]:
    """The non-standard-library modules a script imports at its top level."""
    tree = ast.parse(script.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names if n not in sys.stdlib_module_names and n != "__future__")


@lru_cache(maxsize=None)
def requirement_names() -> frozenset[str]:
    names = set()
    for path in REPO.glob("requirements*"):
        for row in path.read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", row.strip())
            if match:
                names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return frozenset(names)


@lru_cache(maxsize=None)
def tool_distribution(tool: str) -> str | None:
    from importlib.metadata import distributions

    for dist in distributions():
        if any(ep.group == "console_scripts" and ep.name == tool for ep in dist.entry_points):
            return re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        for entry in dist.files or ():
            if entry.parent.name == "bin" and entry.name == tool:  # scripts= of a sdist/wheel
                return re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
    return None


@lru_cache(maxsize=None)
def compose_services(files: tuple[str, ...]) -> frozenset[str]:
    services = set()
    for name in files or ("docker-compose.yaml",):
        services |= set((yaml.safe_load((REPO / name).read_text()) or {}).get("services", {}))
    return frozenset(services)


def check_paths(line: Line, words: list[str], report: Report) -> None:
    for word in words:
        if not REPO_PATH.match(word):
            continue
        wheel = WHEEL.match(word)
        if wheel:
            version = re.search(r'__version__ = "([^"]+)"', (REPO / "plugins/mde_pipeline/__init__.py").read_text())
            if wheel.group("version") != version.group(1):
                report.fail(line, f"{word}: the wheel of version {version.group(1)} is named differently")
        elif word.startswith("dist/"):
            continue  # a build product
        elif not (REPO / word.removeprefix(IMAGE_ROOT)).exists():
            report.fail(line, f"{word} does not exist in the repository")


def check_python(line: Line, args: list[str], pythonpath: tuple[str, ...], report: Report, kind: str,
                 *, system: bool = False) -> None:
    """`<python> -m module ...` or `<python> script ...`; a run with --help is queued."""
    if args[:1] == ["-m"] and len(args) > 1:
        if system:
            report.fail(line, "python3 -m: the system interpreter has none of the project's modules; use .venv/bin/python")
        elif not module_found(args[1], pythonpath):
            report.fail(line, f"module {args[1]} is not found with PYTHONPATH={':'.join(pythonpath)} from the repository")
        else:
            report.help_runs.add((line.where, ("-m", args[1]), pythonpath))
            report.ok(kind)
        return
    if not args or args[0].startswith("-"):
        report.fail(line, "a python line without a module or script")
        return
    script = REPO / args[0].removeprefix(IMAGE_ROOT)
    if not script.is_file():
        if not REPO_PATH.match(args[0]):  # else check_paths said so
            report.fail(line, f"script {args[0]} does not exist in the repository")
        return
    if system and stdlib_only(script):
        report.fail(line, f"{args[0]} runs on the system python3 but imports {stdlib_only(script)}")
        return
    report.help_runs.add((line.where, (str(script),), pythonpath))
    report.ok(kind)


def check_compose(line: Line, words: list[str], report: Report) -> None:
    files, index = [], 2
    while index < len(words) and words[index].startswith("-"):
        if words[index] in ("-f", "--file"):
            files.append(words[index + 1])
        index += 2 if words[index] in ("-f", "--file", "--profile", "-p", "--env-file") else 1
    if index >= len(words):
        report.fail(line, "docker compose without a command")
        return
    command, rest = words[index], words[index + 1 :]
    if command not in ("run", "exec"):
        services = compose_services(tuple(files))
        if command == "logs" and rest and not rest[-1].startswith("-") and rest[-1] not in services:
            report.fail(line, f"no service {rest[-1]} in {files or ['docker-compose.yaml']}")
        return
    position = 0
    while position < len(rest) and rest[position].startswith("-"):
        position += 2 if rest[position] in ("-e", "--env", "-u", "--user", "-w", "--workdir", "--entrypoint") else 1
    if position >= len(rest):
        report.fail(line, f"docker compose {command} without a service")
        return
    service, inside = rest[position], rest[position + 1 :]
    if service not in compose_services(tuple(files)):
        report.fail(line, f"no service {service} in {files or ['docker-compose.yaml']}")
        return
    if inside[:1] == ["python"]:  # in the image: the wheel's package, include/ at /opt/airflow
        check_python(line, inside[1:], ("plugins",), report, "docker compose: python in the image")


def classify(line: Line, report: Report) -> None:
    commands, substitutions = split_top_level(line.text)
    for inner in substitutions:
        classify(Line(line.where, inner, line.comment, line.context), report)
    for command in commands:
        try:
            words = words_of(command)
        except ValueError as error:
            report.fail(line, f"not a shell command line ({error})")
            continue
        env = {}
        while words and ASSIGNMENT.match(words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if not words:
            report.ok("environment setting")
            continue
        head = words[0]
        pythonpath = tuple(p for p in env.get("PYTHONPATH", "").split(":") if p)
        check_paths(line, words, report)
        in_deployment = bool(DEPLOYMENT_NOTE.search(line.comment) or DEPLOYMENT_NOTE.search(line.context))
        if head == "make":
            problem = make_problem(tuple(words[1:]), tuple(sorted(env.items())))
            if problem:
                report.fail(line, problem)
            else:
                report.ok("make target")
        elif head.startswith(VENV_BIN):
            tool = head.removeprefix(VENV_BIN)
            if tool in ("python", "python3"):
                check_python(line, words[1:], pythonpath, report, "venv python")
            elif tool_distribution(tool) in requirement_names():
                report.ok("venv tool of the requirements")
            else:
                report.fail(line, f"{head}: no package of requirements* installs {tool}")
        elif head == "python3" and not in_deployment:
            check_python(line, words[1:], pythonpath, report, "system python3, standard library only", system=True)
        elif head in BARE_IN_DEPLOYMENT or head in BARE_VENV_TOOLS:
            if not in_deployment or head in BARE_VENV_TOOLS:
                report.fail(line, f"a bare `{head}` assumes an activated venv: write {VENV_BIN}{head} or a make "
                                  "target, or say in a comment that the block runs in the deployment")
            elif head.startswith("python"):
                check_python(line, words[1:], pythonpath, report, "in the deployment: python")
            else:
                report.ok(f"in the deployment: {head}")
        else:
            prefix = next((p for p in ALLOWED if words[: len(p.split())] == p.split()), None)
            if prefix is None:
                report.fail(line, f"cannot classify `{head}`: make it checkable or add its prefix to ALLOWED")
                continue
            report.allowed_used.add(prefix)
            report.ok(f"allowed: {prefix}")
            if prefix == "docker compose":
                check_compose(line, words, report)


def run_help(report: Report) -> None:
    """`--help` of every module and script the lines name, with the line's PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    runs = {}
    for where, target, pythonpath in sorted(report.help_runs):
        runs.setdefault((target, pythonpath), where)
    procs = {}
    for (target, pythonpath), where in runs.items():
        child = dict(env, PYTHONPATH=os.pathsep.join(str(REPO / p) for p in pythonpath))
        procs[(target, where)] = subprocess.Popen([sys.executable, *target, "--help"], cwd=REPO, env=child,
                                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for (target, where), proc in procs.items():
        output, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            report.problems.append(f"{where}: python {' '.join(target)} --help exits {proc.returncode}: {output[-500:]}")


def check_text(text: str, name: str) -> Report:
    report = Report()
    lines, unlabelled = doc_lines(text, name)
    report.problems += unlabelled
    for line in lines:
        classify(line, report)
    run_help(report)
    return report


# ---- Tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs_report() -> Report:
    report = Report()
    for name in DOCS:
        one = check_text((REPO / name).read_text(), name)
        report.problems += one.problems
        report.allowed_used |= one.allowed_used
        for kind, count in one.kinds.items():
            report.kinds[kind] = report.kinds.get(kind, 0) + count
    return report


def test_every_doc_command_runs_as_written(docs_report):
    assert not docs_report.problems, "\n".join(docs_report.problems)
    # Each kind of check saw something (a parser that finds nothing proves nothing).
    for kind in ("make target", "venv python", "system python3, standard library only",
                 "in the deployment: airflow", "docker compose: python in the image", "environment setting"):
        assert docs_report.kinds.get(kind), (kind, docs_report.kinds)


def test_every_allowed_prefix_is_used(docs_report):
    assert set(ALLOWED) == docs_report.allowed_used, "drop the unused prefixes from ALLOWED"


def test_drift_is_reported():
    doc = "\n".join([
        "```bash",
        "make no-such-target",
        "python foo.py",
        "pytest tests/unit",
        "frobnicate --all",
        ".venv/bin/python -m mde_pipeline.no_such_module",
        "PYTHONPATH=plugins .venv/bin/python -m mde_pipeline.api.ledger_admin show   # found, --help runs",
        ".venv/bin/not-a-tool --version",
        "docker compose run --rm no-such-service dags list",
        "docker compose run --rm airflow-cli python /opt/airflow/include/deploy/no_such.py",
        "sed -n 1p include/no-such-file.json",
        "```",
        "```",
        "make run",
        "```",
        "Inline: `make run RUN_ARGS=--keep-lake`, `make nope`.",
        "```bash",
        "# in the deployment:",
        "airflow dags unpause mde_alert_ips",
        "python include/deploy/tenant_pools.py",
        "```",
    ])
    report = check_text(doc, "synthetic.md")
    expected = {
        "synthetic.md:2": "make -n exits",
        "synthetic.md:3": "a bare `python` assumes an activated venv",
        "synthetic.md:4": "a bare `pytest` assumes an activated venv",
        "synthetic.md:5": "cannot classify `frobnicate`",
        "synthetic.md:6": "module mde_pipeline.no_such_module is not found",
        "synthetic.md:8": "no package of requirements* installs not-a-tool",
        "synthetic.md:9": "no service no-such-service",
        "synthetic.md:10": "include/deploy/no_such.py does not exist",
        "synthetic.md:11": "include/no-such-file.json does not exist",
        "synthetic.md:13": "a fence of commands without a language",
        "synthetic.md:16 (inline)": "make -n exits",
    }
    for where, why in expected.items():
        assert any(p.startswith(where + ":") and why in p for p in report.problems), (where, why, report.problems)
    assert len(report.problems) == len(expected), report.problems  # the good lines pass
    assert report.kinds["in the deployment: airflow"] == 1 and report.kinds["in the deployment: python"] == 1


def test_shell_parsing():
    assert strip_comment("make run   # builds .venv") == ("make run", "builds .venv")
    assert strip_comment("curl -d '{\"a\": \"#1\"}' x") == ("curl -d '{\"a\": \"#1\"}' x", "")
    commands, inner = split_top_level("TOKEN=$(curl -s x | jq -r .t) && echo \"a|b\"; date")
    assert commands == ["TOKEN=$(curl -s x | jq -r .t)", 'echo "a|b"', "date"]
    assert inner == ["curl -s x | jq -r .t"]
    lines, _ = doc_lines("```console\n$ make run \\\n    RUN_ARGS=--keep-lake\noutput line\n```\n", "c.md")
    assert [(line.where, line.text) for line in lines] == [("c.md:2", "make run RUN_ARGS=--keep-lake")]


def test_one_admin_login_story():
    """`make ui`'s local stack (Airflow's simple auth manager, its default users),
    docker-compose (FAB, the user of .env) and OPERATORS.md's curl name one admin."""
    config = Path(importlib.util.find_spec("airflow").submodule_search_locations[0]) / "config_templates/config.yml"
    local_users = yaml.safe_load(config.read_text())["core"]["options"]["simple_auth_manager_users"]["default"]
    [admin] = [user.split(":")[0] for user in local_users.split(",")]
    assert f"login:             {admin} / {{passwords['{admin}']}}" in (REPO / "include/local_ui.py").read_text()
    for example in (".env.example", ".env.local.example"):
        assert f"\n_AIRFLOW_WWW_USER_USERNAME={admin}\n" in (REPO / example).read_text(), example
    assert f"${{_AIRFLOW_WWW_USER_USERNAME:-{admin}}}" in (REPO / "docker-compose.yaml").read_text()
    init = (REPO / "include/deploy/airflow_init.sh").read_text()
    assert init.count("_AIRFLOW_WWW_USER_USERNAME:-") == init.count(f"_AIRFLOW_WWW_USER_USERNAME:-{admin}}}") > 0
    operators = (REPO / "docs/OPERATORS.md").read_text()
    assert re.findall(r'\\"username\\": \\"(\w+)\\"', operators) == [admin]
    assert f"One login everywhere: user `{admin}`" in operators
    assert f"as `{admin}` (`_AIRFLOW_WWW_USER_USERNAME`)" in (REPO / "docs/DEPLOYMENT.md").read_text()


def test_the_same_dags_are_unpaused_everywhere():
    """README step 5 and DEPLOYMENT.md step 5 unpause the hourly DAG and the compaction
    DAG (its real id); OPERATORS.md names both."""
    dags = REPO / "plugins/mde_pipeline/airflow/dags"
    [compaction] = re.findall(r'dag_id="(\w+)"', (dags / "lake_compaction.py").read_text())
    [hourly] = re.findall(r'^DAG_ID = "(\w+)"', (REPO / "plugins/mde_pipeline/airflow/settings.py").read_text(), re.M)
    for name in ("README.md", "docs/DEPLOYMENT.md"):
        lines, _ = doc_lines((REPO / name).read_text(), name)
        unpaused = {m.group(1) for line in lines for m in [re.search(r"\bdags unpause (\S+)", line.text)] if m}
        assert unpaused == {hourly, compaction}, name
    operators = (REPO / "docs/OPERATORS.md").read_text()
    [paragraph] = [p for p in operators.split("\n\n") if "unpaused" in p and "every DAG starts paused" in p]
    for dag_id in (f"`{hourly}`", f"`{hourly}_<name>`", f"`{compaction}`"):
        assert dag_id in paragraph
