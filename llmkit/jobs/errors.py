"""The errors of a job's files (all :class:`~llmkit.core.errors.ConfigError`, so a
command line prints them as one line and exits with the usage code)."""

from __future__ import annotations

from llmkit.core.errors import ConfigError

__all__ = ["JobFileError", "JobWriteError", "SourceError"]


class JobFileError(ConfigError):
    """A job's input, output, journal or state file that cannot be used as it is (the
    message names the file, and the line where there is one)."""


class JobWriteError(JobFileError):
    """A job file that could not be written (a full disk, a file size limit, a read-only
    directory); the previous output is as it was."""


class SourceError(JobFileError):
    """A job input that is not what API.md describes (names the file and line)."""
