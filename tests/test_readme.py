"""The README cannot drift from the code: every `domainclust ...` command it shows (code blocks
and inline) names a real subcommand and real options whose values type-check, `--set` keys are
real config or adapter keys, and the defaults it quotes are read from the code. Nothing is run."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import pytest
import typer.main

from domainclust.cli import app
from domainclust.config import resolve
from domainclust.data.modality import get_modality, ingest_options, shipped_recipe
from domainclust.errors import DomainclustError
from domainclust.report import ReportSettings
from domainclust.validation import MAX_UPSCALE

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$|\.\.\.|^key=value$|\|")  # N, PATH, SOURCES..., a|b
CONFIG_SETS = {("pretrain",), ("demo",), ("recipe", "run"), ("recipe", "show")}
# click's UsageError (unknown option, bad value, missing option), whether typer uses click or
# a copy of it of its own.
USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def readme_commands(text: str) -> list[str]:
    """Every `domainclust` command line of `text`: code-block lines (continuations joined, `&&`
    chains split) and inline code spans."""
    commands = []
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.strip()
                if re.match(r"(\S*/)?domainclust\s", part):
                    commands.append(part)
    outside = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    for span in re.findall(r"`([^`]+)`", outside):
        span = " ".join(span.split())
        if re.match(r"domainclust [a-z]", span):
            commands.append(span)
    return commands


def without_optional_brackets(token: str) -> str:
    """`[--set` → `--set`, `N]` → `N`; a value's own brackets (`augment=[{...}]`) are kept."""
    while token.startswith("[") and token.count("[") > token.count("]"):
        token = token[1:]
    while token.endswith("]") and token.count("]") > token.count("["):
        token = token[:-1]
    return token


def command_problems(line: str) -> list[str]:
    """What in `line` the real CLI parser refuses (empty when it parses). Placeholders (`N`,
    `PATH`, `SOURCES...`) stand for a value of the right type and are parsed as `1`."""
    tokens = [without_optional_brackets(t) for t in shlex.split(line, comments=True)][1:]
    tokens = [t for t in tokens if t and t != "..."]  # `...`: the one before may repeat
    args = ["1" if PLACEHOLDER.search(t) else t for t in tokens]
    command = typer.main.get_command(app)
    path: list[str] = []
    while hasattr(command, "commands"):  # a group: the next word names its subcommand
        if not args or args[0] not in command.commands:
            word = args[0] if args else "(none)"
            return [f"{line!r}: {' '.join(['domainclust', *path])} has no subcommand {word!r}"]
        path.append(args.pop(0))
        command = command.commands[path[-1]]
    try:
        ctx = command.make_context(" ".join(path), args)
    except USAGE_ERROR as exc:
        return [f"{line!r}: {exc.format_message()}"]
    sets = [v for v in tokens_of(tokens, "--set") if not PLACEHOLDER.search(v)]
    try:
        if tuple(path) in CONFIG_SETS:
            resolve(overrides=sets)
        elif path == ["ingest"] and sets and ctx.params["modality"] != "1":
            ingest_options(get_modality(ctx.params["modality"]), sets)
    except DomainclustError as exc:
        return [f"{line!r}: {exc}"]
    return []


def tokens_of(tokens: list[str], option: str) -> list[str]:
    """The values given to `option` (`--opt value` or `--opt=value`)."""
    values = [t.partition("=")[2] for t in tokens if t.startswith(option + "=")]
    return values + [b for a, b in itertools.pairwise(tokens) if a == option]


def test_every_readme_command_parses_against_the_cli() -> None:
    commands = readme_commands(README.read_text())
    assert len(commands) > 30  # the README's code blocks and inline commands were found
    shown = {tuple(c.split()[1:3]) for c in commands}
    assert ("eval", "voc") in shown and ("recipe", "run") in shown and ("finetune", "--checkpoint") in shown
    problems = [p for c in commands for p in command_problems(c)]
    assert problems == []


@pytest.mark.parametrize("line, problem", [
    ("domainclust eval voc --checkpoint R --voc VOC2007", "No such option: --voc"),
    ("domainclust eval knn --checkpoint R --store s.zarr --k many", "Invalid value for '--k'"),
    ("domainclust eval voc --voc-root VOC2007", "Missing option '--checkpoint'"),
    ("domainclust evaluate knn", "has no subcommand 'evaluate'"),
    ("domainclust pretrain --store S.zarr --run-dir R --set kk=3", "unknown config key"),
    ("domainclust ingest --modality ct x --out o.zarr --set spacingg=1", "adapter's options"),
])
def test_the_check_fails_on_a_renamed_option_or_a_bad_value(line: str, problem: str) -> None:
    assert any(problem in p for p in command_problems(line))


def default_of(path: list[str], option: str) -> object:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return next(p.default for p in command.params if option in p.opts)


def test_the_defaults_the_readme_quotes_are_the_codes() -> None:
    text = " ".join(README.read_text().split())
    for line in readme_commands(text):  # `[--pool 500]` in a usage line is the default
        path = [t for t in line.split()[1:3] if not t.startswith(("-", "[")) and t.islower()]
        for option, value in re.findall(r"\[(--[\w-]+) (\d+)\]", line):
            assert str(default_of(path[:1], option)) == value, (line, option)
    settings = ReportSettings()
    assert f"{settings.queries} seeded queries among {settings.pool} tiles" in text
    epochs = resolve(recipe=shipped_recipe("mnist")).train.epochs
    assert epochs == 10
    assert f"(recipe `recipes/mnist.yaml`, {epochs} epochs)" in text
    assert "two epochs instead of the demo's ten" in text
    assert f"and then at most {MAX_UPSCALE}x the store's" in text


def test_the_front_end_of_every_shipped_recipe_is_as_the_readme_says() -> None:
    text = " ".join(README.read_text().split())
    sentence = re.search(r"Per shipped recipe: (.*?)\.", text)
    assert sentence is not None
    said = {}
    for group in sentence[1].split(";"):
        names, frontend = re.fullmatch(r"(.*) uses? `([\w-]+)`", group.strip()).groups()
        for name in re.findall(r"`([\w-]+)`", names):
            said[name] = frontend
    from domainclust.data.modality import domain_recipe_names

    assert sorted(said) == domain_recipe_names()
    assert {n: resolve(recipe=shipped_recipe(n)).model.frontend for n in said} == said
