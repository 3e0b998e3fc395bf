"""The command's errors: usage errors (exit code 2) and runtime errors (exit code 1), one line each."""

from __future__ import annotations

import argparse

__all__ = ["Parser", "RunError", "UsageError", "one_line"]

PROG = "jaxticket"


class UsageError(Exception):
    """A bad command line: flags, preset, config key or value (exit code 2)."""

    exit_code = 2


class RunError(Exception):
    """The command was fine but could not be carried out (exit code 1)."""

    exit_code = 1


def one_line(message: str) -> str:
    """``message`` on one line (whitespace runs as one space)."""
    return " ".join(str(message).split())


class Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` (one line) instead of printing usage."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")
