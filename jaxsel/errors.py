"""One exception family: anything a user can cause is a `JaxselError` with a one-line message.

The CLI prints `error: <message>` and exits 2 for these; anything else is a bug and keeps its
traceback.
"""


class JaxselError(Exception):
    """Base class for errors caused by input, configuration or environment."""


class InputError(JaxselError, ValueError):
    """Malformed, empty or inconsistent input data (files, texts, arrays, arguments)."""


class AssetError(JaxselError):
    """A model or data asset is missing, unsupported or does not match."""


class ArchiveError(JaxselError):
    """A FineZip archive is corrupted, truncated or was made with another model."""
