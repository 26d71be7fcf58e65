"""User-facing errors. The CLI prints their message (no traceback) and exits non-zero."""

from __future__ import annotations


class KwsError(Exception):
    """An error caused by the user's input or environment, with a message that says what to do."""

    exit_code = 2


class AudioError(KwsError):
    """A WAV file, stdin stream or microphone that cannot be used."""


class ModelError(KwsError):
    """A model or manifest that is missing, malformed or inconsistent."""


class ConfigError(KwsError):
    """A configuration file or command-line value that is invalid."""
