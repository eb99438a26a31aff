"""How ``derms-edge init`` gets what it cannot know: asked on a terminal, the defaults with
``--yes``, and otherwise never a wait on input, but an error naming the flag to give."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TextIO, TypeVar

T = TypeVar("T")


class MissingAnswer(Exception):
    """A question nobody can answer: no terminal, and no flag or ``--yes`` answered it."""

    def __init__(self, question: str, default: str, flag: str) -> None:
        hint = f"give {flag}" if flag == "--yes" else f"give {flag}, or --yes"
        taken = f" (the default: {default!r})" if default else ""
        super().__init__(f"{question}? stdin is not a terminal, so init cannot ask: {hint}{taken}")
        self.flag = flag


class Answers(Protocol):
    """Where answers come from."""

    interactive: bool

    def ask(self, question: str, default: str, flag: str) -> str:
        """The answer to ``question`` (``default`` when none is given); ``flag`` is the
        command-line option that would have answered it."""
        ...


class Defaults:
    """``--yes``: every default, nothing asked."""

    interactive = False

    def ask(self, question: str, default: str, flag: str) -> str:
        """The default."""
        return default


class NoTerminal:
    """No terminal and no ``--yes``: a question is an error naming its flag."""

    interactive = False

    def ask(self, question: str, default: str, flag: str) -> str:
        """Never returns: raises MissingAnswer."""
        raise MissingAnswer(question, default, flag)


class Terminal:
    """Asks on ``out`` and reads a line from ``reader``; an empty line takes the default."""

    interactive = True

    def __init__(self, reader: TextIO, out: TextIO) -> None:
        self._reader = reader
        self._out = out

    def ask(self, question: str, default: str, flag: str) -> str:
        """The line typed, stripped; the default for an empty line."""
        self._out.write(f"{question} [{default}]: " if default else f"{question}: ")
        self._out.flush()
        line = self._reader.readline()
        if not line:  # end of input: nobody is there to answer
            raise MissingAnswer(question, default, flag)
        return line.strip() or default


def ask_valid(
    answers: Answers,
    question: str,
    default: str,
    flag: str,
    parse: Callable[[str], T],
    *,
    out: TextIO,
) -> T:
    """``parse`` of the answer; on a terminal a wrong answer is explained and asked again,
    otherwise its ValueError is raised."""
    while True:
        answer = answers.ask(question, default, flag)
        try:
            return parse(answer)
        except ValueError as error:
            if not answers.interactive:
                raise
            print(f"  {error}", file=out)
