"""The README and docs/ stay true to the code: the site builds, every command shown parses, every path is relative.

Commands are parsed with edgekit's own argparse parser (``edgekit.cli.build_parser``), never run: a sub-command
that does not exist, a flag that sub-command does not have, a bad choice or a missing required argument fails here
with the page and line that shows it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.cli import build_parser
from edgekit.errors import EdgekitError
from edgekit.models.registry import get_spec

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}
# sub-commands whose first positional argument must be a registered model name
TAKES_MODEL_NAME = {"export", "info"}


def _shell_commands(page: Path) -> list[tuple[int, list[str]]]:
    """(line number, argv) of every simple command in the page's shell code blocks; comments, `\\` continuations,
    `$ ` prompts and `&&`/`;`/`|` chains handled as a shell would."""
    text = page.read_text(encoding="utf-8")
    found = []
    for block in FENCE.finditer(text):
        language = block.group(1)
        if language and language not in SHELL_LANGUAGES:
            continue
        first_line = text.count("\n", 0, block.start(2)) + 1
        logical, start = "", None
        for offset, raw in enumerate(block.group(2).splitlines()):
            line = raw[2:] if raw.startswith("$ ") else raw
            if not language and not logical and not line.startswith(("edgekit ", "make ")):
                continue  # an unlabelled block is program output; only a command line in it is checked
            if start is None:
                start = first_line + offset
            if line.rstrip().endswith("\\"):
                logical += line.rstrip()[:-1] + " "
                continue
            logical += line
            lexer = shlex.shlex(logical, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            tokens, command = list(lexer), []
            for token in tokens + [";"]:
                if token in SHELL_OPERATORS:
                    if command:
                        found.append((start, command))
                    command = []
                else:
                    command.append(token)
            logical, start = "", None
    return found


def _commands(program: str) -> list[tuple[str, list[str]]]:
    """Every command of ``program`` (`edgekit` or `make`) shown in the README and docs, as (where, arguments)."""
    out = []
    for page in PAGES:
        for line, argv in _shell_commands(page):
            while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):  # VAR=value before the command
                argv = argv[1:]
            if argv and Path(argv[0]).name == program:
                out.append((f"{page.relative_to(REPO)}:{line}", argv[1:]))
    return out


EDGEKIT_COMMANDS = _commands("edgekit")


def test_the_pages_show_edgekit_commands():
    """Guards the collector itself: were it to find nothing, every test below would pass vacuously."""
    assert len(EDGEKIT_COMMANDS) >= 30
    readme = [args for where, args in EDGEKIT_COMMANDS if where.startswith("README.md")]
    assert {"export", "validate", "eval", "bench"} <= {args[0] for args in readme}


@pytest.fixture(scope="module")
def parser():
    return build_parser()


@pytest.mark.parametrize("where,args", EDGEKIT_COMMANDS, ids=[w for w, _ in EDGEKIT_COMMANDS])
def test_edgekit_command_parses(parser, where, args):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parsed = parser.parse_args(args)
    except SystemExit as e:
        if e.code not in (0, None):  # --help and --version exit 0
            pytest.fail(f"{where}: `edgekit {shlex.join(args)}` does not parse: {stderr.getvalue().strip()}")
        return
    if parsed.command in TAKES_MODEL_NAME and ":" not in parsed.name:  # FILE.py:NAME is a model of the user's own
        try:
            get_spec(parsed.name)
        except EdgekitError as e:
            pytest.fail(f"{where}: `edgekit {shlex.join(args)}`: {e}")


def test_every_sub_command_shown_has_a_help_that_renders(parser):
    """`edgekit COMMAND --help` of every sub-command the pages use prints its usage (argparse formats help lazily:
    a bad metavar or a % in a help string fails only here)."""
    commands = parser._subparsers._group_actions[0].choices
    for name in sorted({args[0] for _, args in EDGEKIT_COMMANDS if args and args[0] in commands}):
        assert commands[name].format_help().startswith(f"usage: edgekit {name}")


def test_the_parser_refuses_what_the_check_must_catch():
    """The check above fails on a flag a sub-command lacks, and on an unknown sub-command."""
    for args in (["export", "mobilenet_v2", "--no-such-flag"], ["validate", "exports", "--calib", "x"],
                 ["frobnicate"]):
        with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(args)
        assert e.value.code == 2


def test_shared_data_paths_in_commands_exist(shared_data):
    """A recipe that names a file of the shared test data names one that is there."""
    for where, args in EDGEKIT_COMMANDS:
        for arg in args:
            value = arg.split("=", 1)[-1]
            if value.startswith("../shared/data/"):
                relative = value[len("../shared/data/"):]
                assert (shared_data / relative).exists(), f"{where}: {value} is not in the shared data"


def test_make_targets_in_readme_and_docs_exist():
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", (REPO / "Makefile").read_text(), re.MULTILINE))
    shown = [(where, arg) for where, args in _commands("make") for arg in args
             if "=" not in arg and not arg.startswith("-")]
    assert any(where.startswith("README.md") for where, _ in shown)
    for where, target in shown:
        assert target in targets, f"{where}: `make {target}` is not a target of the Makefile"
    assert {"export", "test"} <= {target for _, target in shown}


def test_ci_runs_the_readme_test_command():
    """README says `make test` runs the tests; CI must run that same command."""
    assert "make test" in (REPO / "README.md").read_text()
    assert re.search(r"^make test\b", (REPO / ".ci" / "run").read_text(), re.MULTILINE)


def test_readme_is_short_and_links_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"


def test_no_absolute_path_of_this_machine():
    checkout = str(REPO)
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for forbidden in (checkout, str(REPO.parent), "/work/"):
            assert forbidden not in text, f"{page.relative_to(REPO)} holds the absolute path {forbidden}"


def test_site_builds_strict(tmp_path):
    """mkdocs --strict turns every warning (a link to a missing page or anchor, a page left out) into failure."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is not installed: `make setup` installs the docs extra (pip install -e '.[docs]')")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "notes" / "index.html").exists()
