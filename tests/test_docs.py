"""The documentation keeps its word (issue 18 §3): in README.md, results/README.md and
docs/*.md every relative link resolves, every ``python -m <module>`` command shown in a shell
block accepts ``--help`` with every option it shows, and the add-a-method guide's worked
example passes its own test. The README stays a five-minute read (at most 300 lines).

The ``--help`` runs share one interpreter (``runpy``, as ``python -m`` itself runs a module),
so PyTorch and Flower are imported once, not once per module.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "results" / "README.md",
        *sorted((ROOT / "docs").glob("*.md"))]  # fmt: skip
README_MAX_LINES = 300
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console", "zsh"}
HELP_TIMEOUT = 600  # seconds for every --help together (a loaded 2-core machine: ~1 minute)

FENCE = re.compile(r"^([ \t]*)(```+|~~~+)[ \t]*([\w+-]*)[^\n]*\n(.*?)^\1\2[ \t]*$", re.M | re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
OPTION = re.compile(r"(?<![\w-])--[a-zA-Z][\w-]*")
SUBCOMMAND = re.compile(r"^[a-z][a-z0-9_-]*$")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def blocks(text: str) -> Iterator[tuple[str, str, int]]:
    """Fenced code blocks: (info word, body, line number of the body's first line)."""
    for m in FENCE.finditer(text):
        yield m.group(3).lower(), m.group(4), text.count("\n", 0, m.start(4)) + 1


def prose(text: str) -> str:
    """``text`` without fenced blocks and inline code (line numbers kept)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", text)


def links(path: Path) -> list[tuple[int, str]]:
    """Every link target in ``path``'s prose: (line, target)."""
    text = prose(path.read_text())
    found = []
    for pattern in (INLINE_LINK, REFERENCE_LINK, HTML_LINK):
        for m in pattern.finditer(text):
            found.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return sorted(found)


def _local(target: str) -> str:
    """A relative link's file path: no anchor, no query, percent-escapes undone."""
    return unquote(target.split("#", 1)[0].split("?", 1)[0])


def broken_links(path: Path) -> list[str]:
    bad = []
    for line, target in links(path):
        if SCHEME.match(target) or target.startswith(("#", "/")):
            continue  # a web address, an anchor on this page, an absolute path
        local = _local(target)
        if local and not (path.parent / local).exists():
            bad.append(f"{_rel(path)}:{line}: {target}")
    return bad


@dataclass(frozen=True)
class Command:
    """One ``python -m`` command shown in a shell block."""

    where: str  # file:line
    module: str
    args: tuple[str, ...]

    @property
    def word(self) -> str | None:
        """The first argument when it may be a subcommand (``python -m pemn_fl export``)."""
        first = self.args[0] if self.args else ""
        return first if SUBCOMMAND.match(first) else None

    @property
    def options(self) -> set[str]:
        return {m.group(0) for a in self.args for m in OPTION.finditer(a.split("=", 1)[0])}


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote: split on blanks, drop a trailing comment
        return line.split(" #", 1)[0].split()


def commands(path: Path) -> list[Command]:
    """The ``python -m`` commands of ``path``'s shell blocks (continuation lines joined; a
    line split by ``&&``, ``;`` or ``|`` is several commands)."""
    found = []
    for info, body, first in blocks(path.read_text()):
        if info not in SHELL_BLOCKS:
            continue
        lines = body.split("\n")
        i = 0
        while i < len(lines):
            start, line = i, lines[i]
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i]
            i += 1
            words: list[str] = []
            for token in [*_tokens(re.sub(r"^\s*\$\s", "", line)), ";"]:
                if token and set(token) <= set("&|;()<>"):
                    found += _python_m(words, f"{_rel(path)}:{first + start}")
                    words = []
                else:
                    words.append(token)
    return found


def _python_m(words: list[str], where: str) -> list[Command]:
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):  # PYTHONPATH=mydir python ...
        words = words[1:]
    if len(words) >= 3 and Path(words[0]).name in ("python", "python3") and words[1] == "-m":
        return [Command(where, words[2], tuple(words[3:]))]
    return []


def all_commands() -> list[Command]:
    return [c for path in DOCS for c in commands(path)]


# One interpreter runs ``python -m <module> [sub] --help`` for every module shown. It prints
# the module it is about to run (stderr), so a module that ignores --help and hangs is named.
DRIVER = r"""
import contextlib, io, json, re, runpy, sys

def run(module, argv):
    out, saved = io.StringIO(), sys.argv
    sys.argv = [module, *argv]
    print("running python -m", module, *argv, file=sys.__stderr__, flush=True)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = "returned without exiting (is --help parsed?)"
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code
    except BaseException as exc:
        code = f"raised {type(exc).__name__}: {exc}"
    finally:
        sys.argv = saved
    return {"code": code, "help": out.getvalue()}

def subcommands(text):
    section = text.split("positional arguments:", 1)[-1] if "positional arguments:" in text else ""
    m = re.search(r"^\s+\{([\w,.-]+)\}", section, re.M)
    return m.group(1).split(",") if m else []

results = {}
for module, words in json.loads(sys.argv[1]).items():
    top = run(module, ["--help"])
    top["subcommands"] = subcommands(top["help"])
    top["sub"] = {w: run(module, [w, "--help"]) for w in words if w in top["subcommands"]}
    results[module] = top
print(json.dumps(results))
"""


def _help_request() -> str:
    """The modules to run with ``--help``, each with the subcommands the docs use."""
    words: dict[str, set[str]] = {}
    for command in all_commands():
        words.setdefault(command.module, set())
        if command.word:
            words[command.module].add(command.word)
    return json.dumps({m: sorted(w) for m, w in sorted(words.items())})


@pytest.fixture(scope="module", autouse=True)
def help_process() -> Iterator[subprocess.Popen[str]]:
    """The ``--help`` runs, started with this module's first test: they go on beside the
    worked example's test (two cores, half the wall time)."""
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, _help_request()], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def helps(help_process: subprocess.Popen[str]) -> dict[str, dict]:
    """``--help`` of every module (and subcommand) the docs show: code and text."""
    try:
        out, err = help_process.communicate(timeout=HELP_TIMEOUT)
    except subprocess.TimeoutExpired:
        help_process.kill()
        _, err = help_process.communicate()
        started = err.strip().splitlines()
        pytest.fail(f"--help runs took over {HELP_TIMEOUT} s; the last one started: "
                    f"{started[-1] if started else '?'}")  # fmt: skip
    assert help_process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_the_docs_are_found_and_show_commands() -> None:
    names = {_rel(p) for p in DOCS}
    assert {"README.md", "results/README.md", "docs/methods.md", "docs/outputs.md",
            "docs/faults.md", "docs/accounting.md"} <= names  # fmt: skip
    shown = {c.module for c in all_commands()}
    assert {"simulations.run", "simulations.plot", "bench.accuracy_frontier"} <= shown


def test_the_readme_reads_in_five_minutes() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


# -- the add-a-method guide's worked example -------------------------------------------
EXAMPLE_FILE = re.compile(r"^# ((?:[\w.-]+/)*[\w.-]+\.py)\n")
# What a copy of the checkout needs to run a method's test and the options command.
CHECKOUT = ("pemn_fl", "simulations", "bench", "tests/harness.py", "tests/conftest.py",
            "pyproject.toml", "docs/options.md")  # fmt: skip
GENERATED = {"pyproject.toml", "docs/options.md"}  # what `python -m pemn_fl options --write` writes

# Run in the copy: the new method is found and shown everywhere, then its own test passes.
EXAMPLE_DRIVER = r"""
import json, sys
from pemn_fl.__main__ import main
from pemn_fl.methods import names, settings_from
from simulations.run import build_parser
name, flag = sys.argv[1], sys.argv[2]
assert main(["options", "--write"]) == 0
seen = {"in names": name in names(), "in --methods all":
        name in settings_from({"methods": "all"}).method_list,
        "in --help": flag in build_parser().format_help(),
        "in pyproject.toml": f"\n{flag[2:]} = " in open("pyproject.toml").read(),
        "in docs/options.md": f"`{flag}`" in open("docs/options.md").read()
                              and f"| {name} |" in open("docs/options.md").read()}
print(json.dumps(seen))
import pytest
sys.exit(pytest.main(sys.argv[3:] + ["-q", "-p", "no:cacheprovider", "-m", "not slow"]))
"""


def example_files(path: Path) -> dict[str, str]:
    """Python blocks whose first line names a file (``# pemn_fl/methods/mod.py``), by name."""
    return {m.group(1): body[m.end():] for info, body, _ in blocks(path.read_text())
            if info == "python" and (m := EXAMPLE_FILE.match(body))}  # fmt: skip


def _tree(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*"))
            if f.is_file() and "__pycache__" not in f.parts}  # fmt: skip


def test_the_worked_example_adds_a_built_in_method_with_one_module_and_its_test(
    tmp_path: Path,
) -> None:
    """The guide's worked example: its module dropped into a copy of the checkout's method
    package and its test into tests/. Without another file touched by hand, the method is in
    ``--methods all``, ``--help`` (its option), the run config of pyproject.toml and
    docs/options.md once ``python -m pemn_fl options --write`` has run (which changes those
    two files and nothing else), and its own test passes."""
    files = example_files(ROOT / "docs" / "methods.md")
    tests = [name for name in files if Path(name).name.startswith("test_")]
    modules = [name for name in files if name not in tests]
    assert len(tests) == 1 and len(modules) == 1, f"docs/methods.md: example files {sorted(files)}"
    assert modules[0].startswith("pemn_fl/methods/"), "the example is a built-in method"
    name = Path(modules[0]).stem
    flags = re.findall(r"\bOption\(\s*\"([a-z0-9-]+)\"", files[modules[0]])
    assert flags, "the example declares an option of its own"
    checkout = tmp_path / "checkout"
    for part in CHECKOUT:
        source, target = ROOT / part, checkout / part
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    before = _tree(checkout)
    for file, body in files.items():
        (checkout / file).write_text(body)
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "PYTHONPATH": str(checkout)}
    proc = subprocess.run([sys.executable, "-c", EXAMPLE_DRIVER, name, f"--{flags[0]}",
                           tests[0]], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=HELP_TIMEOUT)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    seen = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))
    assert all(seen.values()), seen
    after = _tree(checkout)
    changed = {f for f in before if after.get(f) != before[f]} | (set(after) - set(before))
    assert changed == GENERATED | set(files), changed


def test_every_python_m_command_accepts_help(helps: dict[str, dict]) -> None:
    bad = []
    for command in all_commands():
        result = helps[command.module]
        if result["code"] != 0:
            bad.append(f"{command.where}: python -m {command.module} --help: {result['code']}")
        elif result["subcommands"] and command.word:
            sub = result["sub"].get(command.word)
            if sub is None:
                bad.append(f"{command.where}: python -m {command.module} has no subcommand "
                           f"{command.word!r} (it has {', '.join(result['subcommands'])})")
            elif sub["code"] != 0:
                bad.append(f"{command.where}: python -m {command.module} {command.word} "
                           f"--help: {sub['code']}")  # fmt: skip
    assert bad == [], "\n".join(sorted(set(bad)))


def plugin_flags() -> set[str]:
    """The flags the worked example's plug-in declares (``Option("name", ...)``): shown with
    it on the command line (``--methods mymethods...``), they are not in the plain --help,
    and the example's own test checks them."""
    code = "".join(body for path in DOCS for info, body, _ in blocks(path.read_text())
                   if info == "python")  # fmt: skip
    names = re.findall(r"\bOption\(\s*\"([a-z0-9-]+)\"", code)
    return {flag for name in names for flag in (f"--{name}", f"--no-{name}")}


def test_every_option_shown_is_an_option_of_its_command(helps: dict[str, dict]) -> None:
    bad = []
    for command in all_commands():
        result = helps[command.module]
        text = result["help"]
        if result["subcommands"] and command.word in result["sub"]:
            text = result["sub"][command.word]["help"]
        known = {m.group(0) for m in OPTION.finditer(text)} | plugin_flags()
        for option in sorted(command.options - known):
            name = " ".join(["python -m", command.module, command.word or ""]).strip()
            bad.append(f"{command.where}: {name} has no option {option}")
    assert bad == [], "\n".join(bad)


TABLE_DOCS = [*DOCS, *sorted((ROOT / "results").glob("*/README.md"))]


def _tables(lines: list[str]) -> list[list[tuple[int, str]]]:
    """Each markdown table of ``lines``: its (line index, line) rows, header first."""
    found: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        if line.startswith("|"):
            current.append((index, line))
        elif current:
            found.append(current)
            current = []
    return found + ([current] if current else [])


def copied_tables(path: Path) -> list[tuple[int, Path, list[str], list[list[str]]]]:
    """Tables a doc copies from a committed report: the nearest ``.md`` link above a table
    (under the same heading) names the report, and a report table with the same header line
    makes it a copy. Each: (line, report, the doc's rows, the report's same-header tables'
    rows), bold marks removed (a doc may stress a cell)."""
    def plain(line: str) -> str:
        return line.replace("**", "").rstrip()

    lines = path.read_text().splitlines()
    reports = {line - 1: _local(target) for line, target in links(path)  # 0-based, last wins
               if not SCHEME.match(target) and _local(target).endswith(".md")}  # fmt: skip
    copies = []
    for table in _tables(lines):
        start = table[0][0]
        report = None
        for above in range(start - 1, -1, -1):
            if lines[above].startswith("#"):
                break
            if above in reports:
                report = (path.parent / reports[above]).resolve()
                break
        if report is None or not report.is_file() or report == path.resolve():
            continue
        same = [t for t in _tables(report.read_text().splitlines()) if t[0][1] == table[0][1]]
        if same:
            copies.append((start + 1, report, [plain(row) for _, row in table[2:]],
                           [[plain(row) for _, row in t[2:]] for t in same]))
    return copies


def test_a_table_copied_from_a_report_says_what_the_report_says() -> None:
    """A results table quoted in a README (same header as a table of the report linked just
    above it) matches that report row for row: a report rebuilt after its runs moved (the
    digits frontier's wire bytes, rerun with per-client rows) must not leave a stale copy."""
    copies = [(path, *copy) for path in TABLE_DOCS for copy in copied_tables(path)]
    assert len(copies) >= 4, "the check found too few copied tables to guard anything"
    stale = []
    for path, line, report, rows, candidates in copies:
        def key(row: str) -> str:
            return row.split("|")[1].strip()

        if not any(all({key(r): r for r in table}.get(key(row)) == row for row in rows)
                   for table in candidates):  # fmt: skip
            stale.append(f"{_rel(path)}:{line} differs from {_rel(report)}")
    assert not stale, "copy the report's table again:\n" + "\n".join(stale)
