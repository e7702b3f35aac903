"""Mutation testing of the core modules: ``python -m bench.mutation`` (a benchmark, not CI).

The "every party" tests replay the server's own updates through the same code and check that
digests agree: they prove consistency, not correctness, so a bug that every party makes alike
passes them. Mutation testing measures what the suite really pins down: change the code a
little (``+`` to ``-``, ``<`` to ``<=``, drop an argument, ...) and see whether a test fails.

Four commands, each on a *snapshot* (a detached ``git worktree`` of one commit, so edits in
the working tree during a run that takes hours change nothing, and the table names the commit):

* ``known``: the 13 hand-made mutants of issue 17 that the default suite let through. Each is
  applied to the snapshot and the test files of its module run with ``-x``; every one must
  fail. ``--root DIR`` runs them in an existing checkout instead (e.g. one holding older
  tests, to show that those let the mutants through).
* ``semantic``: the hand-written semantic mutants of issue 25 (``bench/semantic_mutants.py``:
  realistic bugs in the headline code, seeds/report/levers/timesummary, and in faults and
  checkpoint), each applied alone and judged by the default suite: the test files that import
  the mutated module first (``-x``), then, for a mutant they all pass, the whole default
  suite. ``--write`` makes ``results/mutation/semantic.{json,md}``.
* ``run``: mutmut 3 over the core modules, one module at a time, each against the test files
  that cover it (mutmut runs, per mutant, only those of its tests that execute the mutated
  function, fastest first, stopping at the first failure). Each module's outcome lands in
  ``results/mutation/<module>.json`` as soon as it finishes (survivors with their diff), so
  a run cut short keeps every finished module. Log calls and ``raise`` statements are not
  mutated (their mutants only change message text; the raising *condition*, on its own line,
  is mutated). ``--sample N`` tests a seeded sample of N mutants per module. Every survivor
  is then run again as a plain edit of the source file in a fresh pytest process
  (``recheck``): mutmut switches mutants inside one imported copy of the code, so a mutant
  in code that runs at import time (the factories that build each ``METHOD``) is never what
  the tests call, and "survives" whatever they check.
* ``table``: the per-module table (``results/mutation/table.md`` and ``table.csv``) from those
  files and the judged-equivalent survivors in ``results/mutation/equivalent.json``
  (mutant name -> the mutated line and why it is equivalent). A judgement whose line no longer
  matches the mutant's (the source moved) is ignored, so it cannot hide a new survivor.

Kill rate = killed / (mutants - judged equivalent); a timeout counts as killed (the mutant
made a test hang), a mutant no selected test executes counts as survived.

mutmut needs ``pip install mutmut`` (in the ``test`` extra). Runs ``nice -n 19``, one mutant
at a time (``--max-children 1``), with one BLAS/OpenMP thread, beside other work.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "mutation"
NICE = ["nice", "-n", "19"]
QUIET_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
             "PYTHONHASHSEED": "0"}  # fmt: skip


# -- the core modules and the test files that cover them ---------------------------------
@dataclass(frozen=True)
class Module:
    """One row of the table: the files mutated and the test files run against them."""

    name: str
    paths: tuple[str, ...]  # globs relative to the repository root
    tests: tuple[str, ...]


MODULES = [
    Module("levels_codec", ("pemn_fl/levels_codec.py",),
           ("tests/test_levels_codec.py", "tests/test_fuzz.py")),
    Module("voting", ("pemn_fl/methods/frames/voting.py",), ("tests/test_voting.py",)),
    Module("report", ("pemn_fl/report.py", "pemn_fl/figure.py"),
           ("tests/test_report.py", "tests/test_bad_input.py")),
    Module("checkpoint", ("pemn_fl/checkpoint.py",),
           ("tests/test_checkpoint.py", "tests/test_resume.py", "tests/test_damaged_state.py")),
    Module("accounting", ("pemn_fl/accounting.py",),
           ("tests/test_accounting.py", "tests/test_report.py", "tests/test_clientlog.py")),
    Module("transport", ("pemn_fl/transport.py",), ("tests/test_transport.py",
                                                     "tests/test_wire.py")),
    Module("evolving", ("pemn_fl/methods/frames/evolving.py",), ("tests/test_evolve.py",)),
    Module("replica", ("pemn_fl/methods/frames/replica.py",),
           ("tests/test_replica.py", "tests/test_resume.py")),
    Module("compressed", ("pemn_fl/methods/frames/compressed.py",),
           ("tests/test_zoo.py", "tests/test_methods.py")),
    Module("codec", ("pemn_fl/codec.py", "pemn_fl/maskheader.py"),
           ("tests/test_codec.py", "tests/test_fuzz.py", "tests/test_strategy.py")),
    Module("methods/base,messages,registry",
           ("pemn_fl/methods/base.py", "pemn_fl/messages.py",
            "pemn_fl/methods/__init__.py"),
           ("tests/test_strategy.py", "tests/test_methods.py", "tests/test_levers.py")),
    Module("methods/evolve*", ("pemn_fl/methods/evolve*.py",),
           ("tests/test_evolve.py", "tests/test_methods.py")),
    Module("methods/fedpm*", ("pemn_fl/methods/fedpm*.py",),
           ("tests/test_fedpm.py", "tests/test_methods.py")),
    Module("methods/signsgd,qsgd,topk",
           ("pemn_fl/methods/signsgd.py", "pemn_fl/methods/qsgd.py", "pemn_fl/methods/topk.py"),
           ("tests/test_zoo.py", "tests/test_methods.py")),
    Module("methods/pemn,pemn_wide,fedavg",
           ("pemn_fl/methods/pemn.py", "pemn_fl/methods/pemn_wide.py",
            "pemn_fl/methods/fedavg.py"),
           ("tests/test_fedavg.py", "tests/test_strategy.py", "tests/test_methods.py",
            "tests/test_faults.py")),
]  # fmt: skip
# Statements whose mutants only change what a message says (checked by pytest.raises(match=)
# where it matters, but mutmut would make 3 string mutants of every message).
NOT_MUTATED = [r"^\s*raise\s", r"\blog\.(debug|info|warning|error)\("]


def _module(name: str) -> Module:
    for m in MODULES:
        if m.name == name:
            return m
    choices = ", ".join(m.name for m in MODULES)
    raise SystemExit(f"error: unknown module {name!r}; choose from {choices}")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")


# -- snapshots -----------------------------------------------------------------------------
def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def snapshot(commit: str, where: Path) -> tuple[Path, str]:
    """A detached worktree of ``commit`` at ``where`` (reused if it is already that commit)."""
    sha = _git("rev-parse", commit)
    if (where / ".git").exists():
        if _git("rev-parse", "HEAD", cwd=where) != sha or _git("status", "--porcelain",
                                                                 "--untracked-files=no",
                                                                 cwd=where):  # fmt: skip
            raise SystemExit(f"error: {where} holds another commit or local edits; remove it "
                             f"(git worktree remove --force {where}) or pick another --work")
        return where, sha
    where.parent.mkdir(parents=True, exist_ok=True)
    _git("worktree", "add", "--detach", str(where), sha)
    return where, sha


def _env(root: Path) -> dict[str, str]:
    # The venv's editable install points at the main checkout: the snapshot goes first.
    return {**os.environ, **QUIET_ENV, "PYTHONPATH": str(root)}


# -- part 1: the hand-made survivors of issue 17 --------------------------------------------
@dataclass(frozen=True)
class Known:
    """A hand-made mutant: exact text replacements in one file, and the tests that cover it."""

    name: str
    path: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]
    what: str


KNOWN = [
    Known("apply_levels_offset", "pemn_fl/methods/frames/evolving.py",
          (("(lv.astype(np.float32) - np.float32(offset)) * inv", "lv.astype(np.float32) * inv"),),
          ("tests/test_evolve.py",),
          "apply_levels ignores its offset (the lattice's signed steps)"),
    Known("evolve_noise_round", "pemn_fl/methods/frames/evolving.py",
          (('f"noise/{server_round}"', '"noise/0"'),),
          ("tests/test_evolve.py",), "evolve's round noise drawn without the round"),
    Known("dither_round", "pemn_fl/methods/frames/evolving_round.py",
          (('f"dither/{server_round}/{i}"', 'f"dither/{i}"'),),
          ("tests/test_evolve.py",), "evolve_dither's dither drawn without the round"),
    Known("fedpm_uniforms_round", "pemn_fl/methods/fedpm_bayes.py",
          (('f"fedpm-uniforms/{pid}/{server_round}"', 'f"fedpm-uniforms/{pid}"'),),
          ("tests/test_fedpm.py",), "fedpm_bayes' shared uniforms drawn without the round"),
    Known("fedpm_decay_ignored", "pemn_fl/methods/fedpm_bayes.py",
          (("np.float32(1.0), np.float32(decay), np.float32(k)",
            "np.float32(1.0), np.float32(1.0), np.float32(k)"),),
          ("tests/test_fedpm.py",), "fedpm_bayes' posterior decay ignored"),
    Known("target_last_round", "pemn_fl/report.py",
          (('["accuracy"].max()) - 0.01', '["accuracy"].iloc[-1]) - 0.01'),),
          ("tests/test_report.py",), "the target taken from FedAvg's last round, not its best"),
    Known("mean_unweighted", "pemn_fl/methods/frames/compressed.py",
          (("total = float(sum(weights))", "total = float(len(weights))"),
           ("acc += w * d", "acc += d")),
          ("tests/test_zoo.py",), "the weighted mean without weights"),
    Known("non_finite_through", "pemn_fl/methods/frames/compressed.py",
          (("if not all(np.isfinite(d).all() for d in delta):", "if False:"),),
          ("tests/test_zoo.py",), "non-finite updates let through"),
    Known("topk_no_server_residual", "pemn_fl/methods/topk.py",
          (('if "residual" in state:', "if False:"),),
          ("tests/test_zoo.py",), "topk's server step without its residual"),
    Known("signsgd_tie_plus", "pemn_fl/methods/signsgd.py",
          (("[np.sign(v) for v in votes]", "[np.where(v >= 0, 1, -1) for v in votes]"),),
          ("tests/test_zoo.py",), "signsgd casts a tied vote as +1"),
    Known("levels_body_gt", "pemn_fl/levels_codec.py",
          (("pos + body_len != len(buf) - 4", "pos + body_len > len(buf) - 4"),),
          ("tests/test_levels_codec.py",),
          "levels codec checks the body length with > (trailing bytes accepted)"),
    Known("error_reply_not_refused", "pemn_fl/methods/base.py",
          (("            refused += 1\n            log.warning(\"round %s: %s failed",
            "            log.warning(\"round %s: %s failed"),),
          ("tests/test_strategy.py",), "an error reply not counted as refused"),
    Known("replica_not_restored", "pemn_fl/checkpoint.py",
          (("vars(strategy).update(checkpoint.strategy)",
            'vars(strategy).update({k: v for k, v in checkpoint.strategy.items() '
            'if k != "replica"})'),),
          ("tests/test_checkpoint.py", "tests/test_resume.py"),
          "the replica attribute not restored on resume"),
]  # fmt: skip


def _pytest(root: Path, tests: list[str], *extra: str, timeout: float = 3600) -> tuple[int, str]:
    cmd = [*NICE, sys.executable, "-m", "pytest", "-q", "-x", "-rf", "-p", "no:cacheprovider",
           *extra, *tests]  # fmt: skip
    try:
        proc = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return 124, "timeout"
    return proc.returncode, proc.stdout + proc.stderr


def _first_failure(output: str) -> str:
    found = re.search(r"^FAILED (\S+)", output, re.M)
    return found.group(1) if found else ""


def known(args: argparse.Namespace) -> int:
    """Apply each hand-made mutant, run its module's test files, restore the file."""
    if args.root is not None:
        root, sha = Path(args.root).resolve(), _git("rev-parse", "HEAD", cwd=Path(args.root))
    else:
        root, sha = snapshot(args.commit, Path(args.work) / "snapshot")
    picked = [k for k in KNOWN if not args.only or k.name in args.only.split(",")]
    print(f"snapshot {root} at {sha[:12]}", flush=True)
    rows = []
    if not args.no_baseline:  # the unmutated code must pass the same files
        files = sorted({t for k in picked for t in k.tests})
        rc, out = _pytest(root, files)
        print(f"baseline (unmutated) {' '.join(files)}: rc {rc}", flush=True)
        if rc != 0:
            print(out[-3000:])
            return 1
    for k in picked:
        path = root / k.path
        original = path.read_text()
        text = original
        for old, new in k.edits:
            if text.count(old) != 1:
                raise SystemExit(f"error: mutant {k.name}: {old!r} occurs {text.count(old)} "
                                 f"times in {k.path} at {sha[:12]} (the source moved)")
            text = text.replace(old, new)
        started = time.monotonic()
        try:
            path.write_text(text)
            rc, out = _pytest(root, list(k.tests))
        finally:
            path.write_text(original)
        verdict = "killed" if rc not in (0, 5) else "SURVIVED"
        row = {"mutant": k.name, "what": k.what, "tests": " ".join(k.tests), "verdict": verdict,
               "killed_by": _first_failure(out), "seconds": round(time.monotonic() - started)}
        rows.append(row)
        print(f"{verdict:9s} {k.name:26s} {row['killed_by']} ({row['seconds']} s)", flush=True)
    if args.write:
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "known.json").write_text(json.dumps({"commit": sha, "mutants": rows}, indent=1)
                                        + "\n")  # fmt: skip
    return 0 if all(r["verdict"] == "killed" for r in rows) else 1


# -- part 1b: the hand-written semantic mutants of issue 25 ----------------------------------
def _semantic_pick(only: str) -> list:
    from bench.semantic_mutants import SEMANTIC

    names = {m.name for m in SEMANTIC}
    wanted = [n for n in only.split(",") if n]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise SystemExit(f"error: unknown semantic mutant(s) {', '.join(unknown)}")
    return [m for m in SEMANTIC if not wanted or m.name in wanted]


def semantic(args: argparse.Namespace) -> int:
    """Apply each semantic mutant (``bench/semantic_mutants.py``) in the snapshot, one at a
    time, and judge it by the default suite.

    First the test files that import the mutated module run (``FIRST_TESTS``, with ``-x``):
    they are part of the default suite, run with its options (``addopts``: not slow), so a
    failure there is a failure of the default suite. A mutant they all pass is then run
    against the whole default suite (``pytest`` with no file named: ``testpaths``), which
    alone can call it a survivor. ``--first-only`` skips that second stage (a quick survey;
    its survivors are only candidates)."""
    from bench.semantic_mutants import EQUIVALENT, FIRST_TESTS, Semantic

    if args.root is not None:
        root, sha = Path(args.root).resolve(), _git("rev-parse", "HEAD", cwd=Path(args.root))
    else:
        root, sha = snapshot(args.commit, Path(args.work) / "snapshot-semantic")
    picked = _semantic_pick(args.only)
    print(f"snapshot {root} at {sha[:12]}: {len(picked)} semantic mutants", flush=True)
    # A --root checkout may differ from its commit (e.g. older tests): the results say how.
    changed = _git("status", "--porcelain", "--untracked-files=no", cwd=root).splitlines()

    def first(m: Semantic) -> list[str]:  # those the checkout has (--root: older tests)
        return [t for t in FIRST_TESTS[m.path] if (root / t).is_file()]

    if not args.no_baseline:  # the unmutated code must pass what the mutants are judged by
        files = sorted({t for m in picked for t in first(m)})
        for what, tests in (("first test files", files), ("default suite", [])):
            if what == "default suite" and args.first_only:
                continue
            started = time.monotonic()
            rc, out = _pytest(root, tests)
            print(f"baseline (unmutated) {what}: rc {rc} "
                  f"({round(time.monotonic() - started)} s)", flush=True)  # fmt: skip
            if rc != 0:
                print(out[-3000:])
                return 1
    rows: list[dict[str, object]] = []
    for m in picked:
        path = root / m.path
        original = path.read_text()
        if original.count(m.old) != 1:
            raise SystemExit(f"error: mutant {m.name}: its text occurs {original.count(m.old)} "
                             f"times in {m.path} at {sha[:12]} (the source moved)")  # fmt: skip
        started = time.monotonic()
        try:
            path.write_text(original.replace(m.old, m.new))
            rc, out, stage = 0, "", "first test files"
            if first(m):
                rc, out = _pytest(root, first(m), timeout=1800)
            if rc in (0, 5) and not args.first_only:
                rc, out = _pytest(root, [], timeout=3600)
                stage = "default suite"
        finally:
            path.write_text(original)
        killed = rc not in (0, 5)
        verdict = ("killed" if killed else "equivalent" if m.name in EQUIVALENT
                   else "SURVIVED" if stage == "default suite" else "survived first files")
        by = _first_failure(out) or ("timeout" if rc == 124 else f"pytest exit {rc}")
        row = {"mutant": m.name, "path": m.path, "what": m.what, "verdict": verdict,
               "stage": stage, "killed_by": by if killed else "",
               "seconds": round(time.monotonic() - started)}  # fmt: skip
        rows.append(row)
        print(f"{verdict:10s} {m.name:38s} {row['stage']:17s} {row['killed_by']} "
              f"({row['seconds']} s)", flush=True)  # fmt: skip
        if args.write:
            command = "python -m bench.mutation " + shlex.join(args.argv)
            _semantic_write(sha, rows, args.name, command, args.first_only, changed)
    killed = sum(r["verdict"] == "killed" for r in rows)
    equivalent = sum(r["verdict"] == "equivalent" for r in rows)
    print(f"{killed} killed of {len(rows)}, {equivalent} judged equivalent: "
          f"{100 * killed / max(1, len(rows) - equivalent):.1f} % of the non-equivalent")
    return 0


def _semantic_write(sha: str, rows: list[dict[str, object]], name: str, command: str,
                    first_only: bool, changed: list[str]) -> None:  # fmt: skip
    """``results/mutation/<name>.{json,md}``: every mutant, its verdict and what killed it,
    the kill rate, and the argument for each one judged equivalent."""
    from bench.semantic_mutants import EQUIVALENT, SEMANTIC

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps({"commit": sha, "local_changes": changed,
                                                  "command": command, "mutants": rows},
                                                 indent=1) + "\n")  # fmt: skip
    done = {r["mutant"] for r in rows}
    killed = sum(r["verdict"] == "killed" for r in rows)
    judged = sum(r["verdict"] == "equivalent" for r in rows)
    stage_one = sum(r["verdict"] == "killed" and r["stage"] == "first test files" for r in rows)
    by = ("the test files that import the mutated module only (`--first-only`: a survey, "
          "not the default suite)" if first_only else "the default suite")
    lines = [
        f"# Semantic mutants against {by}",
        "",
        f"Commit `{sha[:12]}`"
        + (f" with local changes ({', '.join(f'`{c.strip()}`' for c in changed)})"
           if changed else "")
        + f"; {len(rows)} of the {len(SEMANTIC)} mutants of "
        "`bench/semantic_mutants.py`" + ("" if len(rows) == len(SEMANTIC)
                                         else " (a subset, or a run cut short)") + ". Made by:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"**{killed} killed of {len(rows)}; {judged} judged equivalent (argued below); kill "
        f"rate {100 * killed / max(1, len(rows) - judged):.1f} % of the non-equivalent.** "
        f"Killed by the test files that import the mutated module (run first, with `-x`, "
        f"under the default suite's options, so a failure there is one of the default suite): "
        f"{stage_one}"
        + ("." if first_only else f"; by the rest of the default suite (`pytest`: every test "
           f"file, not slow), run for a mutant those files let through: {killed - stage_one}. "
           "A survivor is a mutant the whole default suite passed."),
        "",
        "| mutant | file | the bug | verdict | killed by |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(f"| `{r['mutant']}` | `{r['path']}` | {r['what']} | {r['verdict']} | "
                     f"{'`' + str(r['killed_by']) + '`' if r['killed_by'] else '-'} |")
    argued = [f"- `{r['mutant']}`: {EQUIVALENT[str(r['mutant'])]}" for r in rows
              if r["verdict"] == "equivalent"]  # fmt: skip
    lines += ["", "## Judged equivalent", "",
              *(argued or ["None: no mutant survived, so none needed arguing."])]
    missing = [m.name for m in SEMANTIC if m.name not in done]
    if missing:
        lines += ["", f"Not run: {', '.join(missing)}."]
    (OUT / f"{name}.md").write_text("\n".join(lines) + "\n")


# -- part 2: mutmut over the core modules ----------------------------------------------------
STATUS = {  # mutmut 3's exit codes (mutmut.__main__.status_by_exit_code), grouped
    "killed": "killed", "timeout": "killed", "segfault": "killed",
    "survived": "survived", "no tests": "survived", "suspicious": "survived",
    "caught by type check": "killed", "skipped": "skipped", "not checked": "not checked",
}  # fmt: skip


def _mutmut_config(module: Module) -> str:
    def toml_list(items: list[str] | tuple[str, ...]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["pemn_fl"]\n'
        f"only_mutate = {toml_list(module.paths)}\n"
        f"do_not_mutate_patterns = {toml_list(NOT_MUTATED)}\n"
        'also_copy = ["simulations", "bench"]\n'
        f"pytest_add_cli_args_test_selection = {toml_list(module.tests)}\n"
        # matplotlib.pyplot as a (hook-less) plugin: imported once in the fork server, not
        # once per mutant (~4 s each on this machine).
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "matplotlib.pyplot"]\n'
        # torch is not fork-safe once it has run: fork each mutant from a clean server.
        'process_isolation = "forkserver"\n'
    )


# mutmut 3.8's exit code of a mutant's test run -> its status (mutmut.stats.status_by_exit_code;
# copied, since importing mutmut reads the configuration of the current directory).
EXIT_STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 2: "not checked",
               None: "not checked", 33: "no tests", 34: "skipped", 35: "suspicious",
               36: "timeout", 37: "caught by type check", -24: "timeout", 24: "timeout",
               152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault"}  # fmt: skip


def _statuses(root: Path) -> dict[str, str]:
    """mutant name -> mutmut's status, from the ``mutants/**/*.py.meta`` files it writes."""
    out: dict[str, str] = {}
    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            out[name] = EXIT_STATUS.get(code, "suspicious")
    return out


def _diff(root: Path, name: str) -> str:
    proc = subprocess.run(["mutmut", "show", name], cwd=root, env=_env(root),
                          capture_output=True, text=True)  # fmt: skip
    return "\n".join(line for line in proc.stdout.splitlines()
                     if line.startswith(("+", "-")) and not line.startswith(("+++", "---")))


# Generate the mutants only (what ``mutmut run`` does first), to know their names.
GENERATE = ("from mutmut.__main__ import create_mutants\n"
            "from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir\n"
            "copy_src_dir(); copy_also_copy_files(); create_mutants(1)\n")  # fmt: skip


def run_module(root: Path, sha: str, module: Module, log_dir: Path, sample: int = 0,
               seed: int = 0) -> dict:  # fmt: skip
    """One mutmut run over ``module`` in the snapshot; returns (and writes) its record.

    ``sample``: test a seeded random sample of that many of the module's mutants (all of them
    if 0 or if there are fewer): the kill rate of a sample estimates the module's, at a
    fraction of the hours, and the table gives its 95 % interval.
    """
    pyproject = root / "pyproject.toml"
    clean = _git("show", f"{sha}:pyproject.toml")
    pyproject.write_text(clean + _mutmut_config(module))
    shutil.rmtree(root / "mutants", ignore_errors=True)
    log = log_dir / f"{_slug(module.name)}.log"
    started = time.monotonic()
    try:
        subprocess.run([*NICE, sys.executable, "-c", GENERATE], cwd=root, env=_env(root),
                       check=True, capture_output=True)  # fmt: skip
        generated = sorted(_statuses(root))
        picked = generated
        if 0 < sample < len(generated):
            picked = sorted(random.Random(f"{seed}/{module.name}").sample(generated, sample))
        with log.open("w") as fh:
            rc = subprocess.run([*NICE, "mutmut", "run", "--max-children", "1",
                                 *(picked if picked != generated else [])], cwd=root,
                                env=_env(root), stdout=fh, stderr=subprocess.STDOUT).returncode
        mutants = []
        statuses = _statuses(root)
        for name in picked:
            status = statuses[name]
            entry = {"name": name, "status": status}
            if STATUS.get(status, "survived") != "killed":
                entry["diff"] = _diff(root, name)  # ``mutmut show`` needs the configuration
            mutants.append(entry)
    finally:
        pyproject.write_text(clean if clean.endswith("\n") else clean + "\n")
    record = {"module": module.name, "paths": list(module.paths), "tests": list(module.tests),
              "commit": sha, "mutmut_rc": rc, "seconds": round(time.monotonic() - started),
              "generated": len(generated), "sample_seed": seed if picked != generated else None,
              "mutants": mutants}  # fmt: skip
    recheck_record(root, record)
    record["seconds"] = round(time.monotonic() - started)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{_slug(module.name)}.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def _source_of(name: str, root: Path) -> Path:
    """The file a mutant lives in: ``pemn_fl.methods.topk.x_f__mutmut_3`` -> its module."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        # A module, or a package's own code (``pemn_fl.methods.x_f__mutmut_8``: __init__.py).
        for candidate in (root.joinpath(*parts[:i]).with_suffix(".py"),
                          root.joinpath(*parts[:i], "__init__.py")):  # fmt: skip
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(name)


def _patch(diff: str) -> tuple[str, str]:
    """The text a mutant replaces and its replacement, from ``mutmut show``'s changed lines."""
    old = "\n".join(line[1:] for line in diff.splitlines() if line.startswith("-"))
    new = "\n".join(line[1:] for line in diff.splitlines() if line.startswith("+"))
    return old, new


def recheck_record(root: Path, record: dict, again: bool = False) -> None:
    """Run every survivor again as a plain edit of the source, in a fresh pytest process.

    mutmut switches mutants inside one imported copy of the code, so a mutant in a function
    that runs at import time (a factory building ``METHOD``, a closure made then) is never
    the code the tests call: it "survives" whatever the tests check. Written into the file
    and imported afresh, it is judged on what the tests really see. A survivor whose text
    is not found exactly once is left as mutmut judged it.
    """
    for m in record["mutants"]:
        if STATUS.get(m["status"], "survived") != "survived" or m.get("recheck") == "killed":
            continue
        if "recheck" in m and not again:
            continue
        path = _source_of(m["name"], root)
        old, new = _patch(m.get("diff", ""))
        original = path.read_text()
        # The mutated function: x_f__mutmut_3 -> f, xǁCǁm__mutmut_3 -> m; its text starts
        # at its def, so an edit whose text recurs elsewhere lands in the right place.
        func = m["name"].rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0].split("ǁ")[-1]
        func = func[2:] if func.startswith("x_") else func
        start = original.find(f"def {func}(")
        at = original.find(old, max(start, 0)) if old else -1
        if at < 0 or (start < 0 and original.count(old) != 1):
            m["recheck"] = "not applied (text not found)"
            continue
        try:
            path.write_text(original[:at] + new + original[at + len(old):])
            rc, out = _pytest(root, list(record["tests"]), timeout=1800)
        finally:
            path.write_text(original)
        if rc not in (0, 5):
            m["recheck"] = "killed"
            m["killed_by"] = _first_failure(out) or f"pytest exit {rc}"
        else:
            m["recheck"] = "survived"
        print(f"    recheck {m['name']}: {m['recheck']} {m.get('killed_by', '')}", flush=True)


def recheck(args: argparse.Namespace) -> int:
    """``recheck`` for module records already written (at their own commits)."""
    names = [m.name for m in MODULES] if args.modules == "all" else args.modules.split(";")
    for name in names:
        path = OUT / f"{_slug(_module(name).name)}.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        at = args.at or record["commit"]
        root, sha = snapshot(at, Path(args.work) / f"snapshot-{at[:12]}")
        print(f"{time.strftime('%H:%M:%S')} {name}: recheck at {sha[:12]}", flush=True)
        if sha != record["commit"]:
            # The survivors of this row, judged again with the tests of a later commit (the
            # ones written for them, and the module's test files as MODULES now lists them);
            # the row says so.
            record["recheck_commit"] = sha
            record["tests"] = [*record["tests"],
                               *(t for t in _module(name).tests if t not in record["tests"])]
        recheck_record(root, record, again=bool(args.at))
        path.write_text(json.dumps(record, indent=1) + "\n")
    table(args)
    return 0


def run(args: argparse.Namespace) -> int:
    if shutil.which("mutmut") is None:
        raise SystemExit("error: mutmut is not installed (pip install -e '.[test]')")
    root, sha = snapshot(args.commit, Path(args.work) / "snapshot")
    names = [m.name for m in MODULES] if args.modules == "all" else args.modules.split(";")
    log_dir = Path(args.work) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        module = _module(name)
        print(f"{time.strftime('%H:%M:%S')} {module.name}: mutmut over {', '.join(module.paths)}"
              f" against {', '.join(module.tests)} (log {log_dir})", flush=True)  # fmt: skip
        record = run_module(root, sha, module, log_dir, args.sample, args.seed)
        counts = _count(record, {})
        print(f"{time.strftime('%H:%M:%S')} {module.name}: {counts['mutants']} mutants, "
              f"{counts['killed']} killed, {counts['survived']} survived "
              f"({record['seconds']} s, mutmut rc {record['mutmut_rc']})", flush=True)
    table(args)
    return 0


# -- part 3: the table -----------------------------------------------------------------------
def _mutated_line(diff: str) -> str:
    plus = [line[1:].strip() for line in diff.splitlines() if line.startswith("+")]
    return plus[0] if plus else ""


def _count(record: dict, equivalent: dict[str, dict]) -> dict[str, object]:
    killed = survived = judged = unchecked = 0
    for m in record["mutants"]:
        group = STATUS.get(m["status"], "survived")
        if m.get("recheck") == "killed":
            group = "killed"
        if group == "killed":
            killed += 1
        elif group in ("skipped", "not checked"):
            unchecked += 1
        else:
            survived += 1
            j = equivalent.get(m["name"])
            if j is not None and j.get("line") == _mutated_line(m.get("diff", "")):
                judged += 1
    total = killed + survived
    rate = killed / (total - judged) if total - judged else float("nan")
    low, high = _wilson(killed, total - judged)
    return {"module": record["module"], "generated": record.get("generated", total),
            "mutants": total, "killed": killed, "survived": survived, "equivalent": judged,
            "not_checked": unchecked, "kill_rate_non_equivalent": round(rate, 4),
            "ci95_low": round(low, 4), "ci95_high": round(high, 4),
            "commit": record["commit"][:12]
            + (f" (survivors rechecked at {record['recheck_commit'][:12]})"
               if record.get("recheck_commit") else ""),
            "seconds": record.get("seconds", 0)}  # fmt: skip


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion k / n (of a sample; exact when all were tested)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def table(args: argparse.Namespace) -> int:
    """``results/mutation/table.{md,csv}`` from the module records and the judgements."""
    path = OUT / "equivalent.json"
    equivalent = json.loads(path.read_text()) if path.exists() else {}
    rows = []
    for module in MODULES:
        record_path = OUT / f"{_slug(module.name)}.json"
        if record_path.exists():
            rows.append(_count(json.loads(record_path.read_text()), equivalent))
    if not rows:
        print("no module records yet: python -m bench.mutation run")
        return 1
    fields = list(rows[0])
    with (OUT / "table.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    total = {k: sum(int(r[k]) for r in rows) for k in ("generated", "mutants", "killed",
                                                     "survived", "equivalent", "not_checked")}
    overall = total["killed"] / max(1, total["mutants"] - total["equivalent"])
    lines = ["| module | mutants | tested | killed | survived | judged equivalent | kill rate "
             "(non-equivalent) | 95 % interval | commit | run time |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]  # fmt: skip
    for r in rows:
        interval = ("all tested" if r["mutants"] == r["generated"] else
                    f"{100 * float(r['ci95_low']):.0f}-{100 * float(r['ci95_high']):.0f} %")
        lines.append(f"| {r['module']} | {r['generated']} | {r['mutants']} | {r['killed']} | "
                     f"{r['survived']} | {r['equivalent']} | "
                     f"{100 * float(r['kill_rate_non_equivalent']):.1f} % | {interval} | "
                     f"{r['commit']} | {int(r['seconds']) // 60} min |")  # fmt: skip
    low, high = _wilson(total["killed"], total["mutants"] - total["equivalent"])
    lines.append(f"| **all run** | {total['generated']} | {total['mutants']} | "
                 f"{total['killed']} | {total['survived']} | {total['equivalent']} | "
                 f"**{100 * overall:.1f} %** | {100 * low:.0f}-{100 * high:.0f} % | | |")
    ran = {r["module"] for r in rows}
    missing = [m.name for m in MODULES if m.name not in ran]
    if missing:
        lines.append("")
        lines.append(f"Not run yet: {', '.join(missing)}.")
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _into_readme("table", "\n".join(lines))
    _into_readme("equivalent", "\n".join(_equivalent_lines(equivalent, ran)))
    unjudged = [(r["module"], m["name"], _mutated_line(m.get("diff", "")))
                for r in (json.loads((OUT / f"{_slug(n)}.json").read_text()) for n in
                          [m.name for m in MODULES if m.name in ran])
                for m in r["mutants"]
                if STATUS.get(m["status"], "survived") == "survived"
                and m.get("recheck") != "killed"
                and not (m["name"] in equivalent
                         and equivalent[m["name"]].get("line") == _mutated_line(m.get("diff", "")))
                ]  # fmt: skip
    _into_readme("unjudged", "\n".join(f"- {module}: `{name.removeprefix('pemn_fl.')}` (`{line}`)"
                                        for module, name, line in unjudged) or "None.")
    if unjudged and args.list_unjudged:
        print(f"\n{len(unjudged)} survivors not judged equivalent:")
        for module, name, line in unjudged:
            print(f"  {module}: {name}: {line}")
    return 0


def _into_readme(section: str, text: str) -> None:
    """Replace the generated ``section`` of ``results/mutation/README.md`` (between its
    ``<!-- section -->`` and ``<!-- /section -->`` markers), if the README has one."""
    readme = OUT / "README.md"
    if not readme.exists():
        return
    body = readme.read_text()
    start, end = f"<!-- {section} -->", f"<!-- /{section} -->"
    if start in body and end in body:
        head, rest = body.split(start, 1)
        readme.write_text(head + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def _equivalent_lines(equivalent: dict[str, dict], ran: set[str]) -> list[str]:
    """The judged-equivalent survivors of the modules in the table, grouped by reason."""
    records = [OUT / f"{_slug(m.name)}.json" for m in MODULES if m.name in ran]
    by_why: dict[str, list[str]] = {}
    for path in records:
        for m in json.loads(path.read_text())["mutants"]:
            j = equivalent.get(m["name"])
            if j is not None and "diff" in m and j.get("line") == _mutated_line(m["diff"]):
                short = m["name"].removeprefix("pemn_fl.")
                by_why.setdefault(j["why"], []).append(f"`{short}` (`{j['line']}`)")
    return [f"- {why}: {', '.join(names)}" for why, names in by_why.items()]


def judge(args: argparse.Namespace) -> int:
    """Record survivors as equivalent in ``results/mutation/equivalent.json``, with why."""
    path = OUT / "equivalent.json"
    equivalent = json.loads(path.read_text()) if path.exists() else {}
    survivors = {}
    for record_path in OUT.glob("*.json"):
        if record_path.name in ("equivalent.json", "known.json"):
            continue
        for m in json.loads(record_path.read_text())["mutants"]:
            if "diff" in m:
                survivors[m["name"]] = m
    for name in args.names.split(","):
        if name not in survivors:
            raise SystemExit(f"error: {name} is not a survivor of any module record")
        equivalent[name] = {"line": _mutated_line(survivors[name]["diff"]), "why": args.why}
    path.write_text(json.dumps(dict(sorted(equivalent.items())), indent=1) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.mutation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("known", "the 13 hand-made survivors of issue 17"),
                        ("semantic", "the hand-written semantic mutants of issue 25"),
                        ("run", "mutmut over the core modules, one module at a time"),
                        ("table", "rebuild the table from results/mutation/*.json"),
                        ("judge", "record survivors as equivalent, with why"),
                        ("recheck", "survivors again, as plain edits in a fresh process")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--commit", default="HEAD", help="the commit to snapshot (default HEAD)")
        p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "pemn-mutation"),
                       help="where the snapshot worktree and logs go")
        p.add_argument("--list-unjudged", action="store_true",
                       help="list the survivors not judged equivalent")
        if name in ("known", "semantic"):
            p.add_argument("--root", default=None,
                           help="mutate this checkout instead of a snapshot (it must be clean)")
            p.add_argument("--only", default="", help="comma list of mutant names")
            p.add_argument("--no-baseline", action="store_true",
                           help="skip the run of the unmutated code")
            p.add_argument("--write", action="store_true",
                           help=f"write results/mutation/{name}.json"
                           + (" and semantic.md" if name == "semantic" else ""))
        if name == "semantic":
            p.add_argument("--name", default="semantic",
                           help="--write results/mutation/NAME.{json,md} (default semantic)")
            p.add_argument("--first-only", action="store_true",
                           help="only the test files of the mutated module (a quick survey: "
                           "its survivors are candidates, not survivors of the default suite)")
        if name == "judge":
            p.add_argument("names", help="comma list of mutant names (mutmut's)")
            p.add_argument("--why", required=True, help="one line: why it is equivalent")
        if name == "recheck":
            p.add_argument("--at", default="",
                           help="recheck the survivors at this later commit (its tests)")
        if name in ("run", "recheck"):
            p.add_argument("--modules", default="all",
                           help="';'-separated module names of the table, or 'all': "
                           + "; ".join(m.name for m in MODULES))
        if name == "run":
            p.add_argument("--sample", type=int, default=0,
                           help="test a seeded sample of this many mutants per module (0: all)")
            p.add_argument("--seed", type=int, default=0, help="the sample's seed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv  # the command, for the results
    commands = {"known": known, "semantic": semantic, "run": run, "table": table,
                "judge": judge, "recheck": recheck}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
