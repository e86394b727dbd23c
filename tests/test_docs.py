"""The documentation's examples work: README.md and docs/*.md.

Convention: a fenced code block whose info string is `bash run` or `python run` is runnable, and this file runs
it (bash through `bash -e`, Python through this interpreter, `sys.executable`); every other block is
illustrative. The blocks of one page run in order in one temporary folder, where the repository's `results`,
`experiments` and `configs` folders are reachable by the same relative paths (symbolic links), so whatever a
block writes lands in the temporary folder and a later block of the page can read it.

Three cheap checks run on every block, runnable or not: its info string names a known language; every
`smallest-loss` command in a bash block parses with the real command-line parser (an illustrative command that
names a flag the CLI no longer has fails here); and every relative link of the pages points at a file of the
repository.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED = ("results", "experiments", "configs")  # reachable from a page's folder by the same relative paths
LANGUAGES = {"bash", "python", "text", "json", "toml", "csv"}
RUNNABLE = {"bash", "python"}
BLOCK_TIMEOUT_S = 600
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    info: str
    code: str

    @property
    def language(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    @property
    def runnable(self) -> bool:
        words = self.info.split()
        return len(words) == 2 and words[0] in RUNNABLE and words[1] == "run"

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def scan(page: Path) -> tuple[list[Block], list[str]]:
    """Every fenced code block of a Markdown page in order (fences may be indented, as in a list), and the
    lines outside them (the prose)."""
    blocks: list[Block] = []
    prose: list[str] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            prose.append(lines[i])
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        start, body = i, []
        i += 1
        closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        while i < len(lines) and not closing.match(lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{page.relative_to(ROOT)}:{start + 1}: a fenced block is never closed")
        blocks.append(Block(page, start + 1, match["info"].strip(), "\n".join(body) + "\n"))
        i += 1
    return blocks, prose


ALL_BLOCKS = [block for page in PAGES for block in scan(page)[0]]
RUNNABLE_BLOCKS = [block for block in ALL_BLOCKS if block.runnable]


def test_every_block_names_its_language() -> None:
    """An info string is a known language, then `run` or nothing; only bash and Python blocks can be run."""
    bad = []
    for block in ALL_BLOCKS:
        words = block.info.split()
        if not words or words[0] not in LANGUAGES:
            bad.append(f"{block.name}: info string {block.info!r} names no known language ({sorted(LANGUAGES)})")
        elif words[1:] and (words[1:] != ["run"] or words[0] not in RUNNABLE):
            bad.append(f"{block.name}: info string {block.info!r}: only `bash run` and `python run` are runnable")
    assert not bad, "\n".join(bad)


def smallest_loss_commands(code: str) -> list[list[str]]:
    """The arguments of every `smallest-loss` command in a bash block (line continuations joined)."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
        for i, token in enumerate(tokens):
            if token == "smallest-loss":
                args = []
                for arg in tokens[i + 1 :]:
                    if arg and all(c in "();<>|&" for c in arg):
                        break
                    args.append(arg)
                commands.append(args)
    return commands


def test_every_shown_command_parses() -> None:
    """Every `smallest-loss` command shown in a bash block, runnable or illustrative, names a real command and
    real flags with well-formed values (argparse's checks; nothing runs)."""
    from smallest_loss.experiments.cli import build_parser

    parser = build_parser()
    bad, seen = [], 0
    for block in ALL_BLOCKS:
        if block.language != "bash":
            continue
        for args in smallest_loss_commands(block.code):
            seen += 1
            message = io.StringIO()
            try:
                with contextlib.redirect_stderr(message):
                    parser.parse_args(args)
            except SystemExit:
                error = message.getvalue().strip().splitlines()[-1:] or ["refused"]
                bad.append(f"{block.name}: smallest-loss {shlex.join(args)}\n    {error[0]}")
    assert seen > 0, "no smallest-loss command found in any bash block"
    assert not bad, "commands the CLI refuses to parse:\n" + "\n".join(bad)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = [line.lstrip("#").strip() for line in scan(page)[1] if re.match(r"#{1,6} ", line)]
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_relative_links_resolve() -> None:
    """Every relative Markdown link of README.md and docs/*.md points at a file or folder of the repository,
    and a link to a heading of a page (`page.md#heading`) at a heading that exists."""
    bad = []
    for page in PAGES:
        text = "\n".join(scan(page)[1])
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists() or (path != ROOT and ROOT not in path.parents):
                bad.append(f"{page.relative_to(ROOT)}: link to {target}: no such file in the repository")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                bad.append(f"{page.relative_to(ROOT)}: link to {target}: no such heading in {path.name}")
    assert not bad, "\n".join(bad)


def test_docs_have_runnable_blocks() -> None:
    """The check below has something to check: the README and the API page carry runnable examples."""
    pages = {block.page.name for block in RUNNABLE_BLOCKS}
    assert {"README.md", "api.md"} <= pages, pages


@pytest.fixture(scope="module")
def page_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, tuple[Path, dict[int, str | None]]]:
    """One folder per page (created on first use), and each block's outcome there (None: it passed)."""
    return {}


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # `smallest-loss` and `python` are this interpreter's (the virtual environment's) wherever PATH points.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _run(block: Block, folder: Path) -> str | None:
    """Run one block in `folder`; None when it succeeds, else what went wrong (its output's tail)."""
    script = folder / f".block-{block.line}.{'sh' if block.language == 'bash' else 'py'}"
    script.write_text(block.code)
    command = ["bash", "-e", str(script)] if block.language == "bash" else [sys.executable, str(script)]
    try:
        done = subprocess.run(
            command, cwd=folder, env=_environment(), capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return f"{block.name}: still running after {BLOCK_TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    output = (done.stdout + done.stderr)[-4000:]
    return f"{block.name}: exit code {done.returncode}\n--- block ---\n{block.code}--- output (tail) ---\n{output}"


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE_BLOCKS, ids=[block.name for block in RUNNABLE_BLOCKS])
def test_runnable_block(block: Block, page_folders, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A runnable block succeeds, run after the page's earlier runnable blocks in the page's folder."""
    if block.page not in page_folders:
        folder = tmp_path_factory.mktemp(block.page.stem)
        for name in LINKED:
            (folder / name).symlink_to(ROOT / name, target_is_directory=True)
        page_folders[block.page] = (folder, {})
    folder, outcomes = page_folders[block.page]
    for earlier in RUNNABLE_BLOCKS:  # blocks this one may read the outputs of, when run alone (-k)
        if earlier.page == block.page and earlier.line < block.line and earlier.line not in outcomes:
            outcomes[earlier.line] = _run(earlier, folder)
    if block.line not in outcomes:
        outcomes[block.line] = _run(block, folder)
    failure = outcomes[block.line]
    assert failure is None, failure
