"""README.md and docs/*.md: every relative link resolves (to a file, and with an anchor to one of its headings),
and every ``python -m selfplay.<entry> ...`` command in their code names only keys (or flags) its entry point has.

The commands are read as ``tests/test_launch.py`` reads the launch files' (``selfplay_commands``); a value may be a
placeholder (``<dir>``, ``...``, ``/path/to/...``), a key may not."""

from __future__ import annotations

import contextlib
import functools
import io
import re
from pathlib import Path

import pytest
from test_launch import selfplay_commands

from selfplay import generate, report
from selfplay.config.loading import load_config
from selfplay.config.pm import EvalPMConfig, TrainPMConfig
from selfplay.config.schema import CONFIG_DIR, Config, ConfigError

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
ENTRY = re.compile(r"python -m selfplay\.(\w+(?:\.\w+)*)")
SCHEMAS = {"run": Config, "plan": Config, "train_pm": TrainPMConfig, "eval_pm": EvalPMConfig}
ARGPARSE = {"generate": generate.main, "report": report.main}
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.")


def split_code(text: str) -> tuple[list[str], str]:
    """The code of a Markdown text (each fenced block, each inline span) and its prose without them."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    spans = [m.group(2) for m in INLINE.finditer(prose)]
    return blocks + spans, INLINE.sub("", prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lowercased, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor in a Markdown text, repeated headings numbered as GitHub numbers them (-1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_problems(path: Path, text: str, prose: str) -> list[str]:
    """The relative links of ``prose`` (the Markdown ``text`` of ``path`` outside code) that do not resolve."""
    problems = []
    for _, target in LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if file_part and not dest.exists():
            problems.append(f"{path.name}: link ({target}): no file {file_part} beside {path.name}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text() if file_part else text):
            problems.append(f"{path.name}: link ({target}): no heading '#{anchor}' in {dest.name}")
    return problems


def commands(code: str) -> list[tuple[str, str]]:
    """(entry point, its command text) for every ``python -m selfplay.<entry>`` in a piece of code: from the
    entry's name to the next entry (or the piece's end), line continuations joined."""
    flat = " ".join(line.strip().rstrip("\\") for line in code.splitlines())
    found = list(ENTRY.finditer(flat))
    return [(m.group(1), flat[m.start():found[i + 1].start() if i + 1 < len(found) else len(flat)])
            for i, m in enumerate(found)]


def config_problem(entry: str, text: str) -> str | None:
    """An unknown key (or preset) in a config entry point's command, or None.  Read by test_launch's
    ``selfplay_commands``, as the launch files' commands are: a preset of ``configs/pm/`` is given as ``pm/NAME``."""
    words = text.split()
    if entry in ("train_pm", "eval_pm") and len(words) > 3 and (CONFIG_DIR / "pm" / f"{words[3]}.yaml").exists():
        words[3] = f"pm/{words[3]}"
    args = selfplay_commands(" ".join(["python -m selfplay.run", *words[3:]]))
    if not args:
        return None
    preset = [] if "=" in args[0][0] else [args[0][0]]
    overrides = [a for a in args[0] if "=" in a]
    placeholders = {a.split("=", 1)[0] for a in overrides if PLACEHOLDER.search(a.split("=", 1)[1])}
    overrides = [f"{a.split('=', 1)[0]}=null" if a.split("=", 1)[0] in placeholders else a for a in overrides]
    while True:  # keys only: the checks across keys (validate, check_train) want real values, not placeholders
        try:
            load_config([*preset, *overrides], schema_class=SCHEMAS[entry], preset_dir=CONFIG_DIR,
                        check=lambda cfg: None)
            return None
        except ConfigError as e:
            key = re.match(r"bad value for '([^']+)'", str(e))
            if not (key and key.group(1) in placeholders):
                return f"{text.strip()}: {e}"
            # the key exists and its value is a stand-in: check the others
            overrides = [a for a in overrides if a.split("=", 1)[0] != key.group(1)]


@functools.cache
def argparse_flags(main) -> frozenset[str]:
    """The options an argparse entry point's ``--help`` lists."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["--help"])
    return frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", out.getvalue()))


def flag_problem(entry: str, text: str) -> str | None:
    """A flag in a ``selfplay.generate`` / ``selfplay.report`` command that its parser does not have, or None."""
    words = []
    for word in text.split()[3:]:
        if word in ("#", "&&", "|", ";", "&") or word.startswith("#"):
            break
        words.append(word)
    flags = {w.split("=", 1)[0] for w in words if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", w)}
    unknown = sorted(flags - argparse_flags(ARGPARSE[entry]))
    return f"{text.strip()}: no option {', '.join(unknown)}" if unknown else None


def problems_in(path: Path, text: str) -> tuple[list[str], int]:
    """What is wrong in one Markdown text (broken links, unknown keys and flags), and how many commands it holds."""
    code, prose = split_code(text)
    problems = link_problems(path, text, prose)
    n = 0
    for piece in code:
        for entry, command in commands(piece):
            if entry not in SCHEMAS and entry not in ARGPARSE:  # another module (selfplay.world.cyclic), selfplay.X
                if not entry.isupper() and not (REPO / "selfplay" / f"{entry.replace('.', '/')}.py").exists():
                    problems.append(f"{path.name}: {command.strip()}: no module selfplay.{entry}")
                continue
            n += 1
            problem = (config_problem if entry in SCHEMAS else flag_problem)(entry, command)
            if problem:
                problems.append(f"{path.name}: {problem}")
    return problems, n


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve_and_commands_name_only_known_keys(path):
    problems, _ = problems_in(path, path.read_text())
    assert not problems, "\n".join(problems)


def test_the_docs_hold_commands_of_every_entry_point():
    """The reader finds what it checks: commands of all six entry points across README and docs."""
    entries = {entry for path in DOCS for piece in split_code(path.read_text())[0] for entry, _ in commands(piece)}
    assert {*SCHEMAS, *ARGPARSE} <= entries
    assert sum(problems_in(p, p.read_text())[1] for p in DOCS) >= 40


def test_a_broken_link_an_unknown_key_and_an_unknown_flag_are_each_found():
    text = "\n".join([
        "# A heading, with `code`", "",
        "[ok](docs/methods.md#1-the-iteration-all-algorithms) [ok](#a-heading-with-code) [gone](docs/nowhere.md)",
        "[bad anchor](docs/methods.md#no-such-heading) [web](https://example.org/x)", "",
        "```bash", "python -m selfplay.run iter=3 generator.kk=4 \\", "    run.dir=<dir>", "```", "",
        "`python -m selfplay.train_pm kind=bt\n    data.pth=x.jsonl` and `python -m selfplay.eval_pm scorer.model=...`",
        "`python -m selfplay.generate --model RUN/iter_3 --directoin 0.8,-0.6 \"hi\"`",
        "`python -m selfplay.plan scale/sppo_8b_1node policy.model=...`",
    ])
    problems, n = problems_in(REPO / "README.md", text)
    assert n == 5
    assert len(problems) == 5, "\n".join(problems)
    for needle in ("docs/nowhere.md", "#no-such-heading", "generator.kk", "data.pth", "--directoin"):
        assert any(needle in p for p in problems), needle
