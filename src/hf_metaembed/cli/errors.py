"""The error policy of `hf-metaembed`: exit codes, the errors commands raise, and the one mapping from an exception to
its exit code and one-line message. A leaf: every command module (the demo too) imports it, it imports none of them."""

import importlib
import re

from ..io.records import InputError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES = """exit codes:
  0    success
  1    runtime failure (a model or library error, a failed write); rerunning `embed` resumes where it stopped
  2    usage or input error: bad arguments, missing or unreadable input, unknown column or format, output not
       writable, invalid sequence, missing optional dependency
  130  interrupted (Ctrl-C); `embed` keeps every finished record and resumes when rerun

add --debug to any subcommand to see the full traceback of an error."""

DEMO_EXTRA_HINT = "pip install 'hf_metaembed[demo]'"

# errors the user fixes by changing the input or the arguments (exit code 2); any other exception is a failure (1)
USAGE_ERRORS = (InputError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class CLIError(Exception):
    """An error reported as one line with a given exit code."""

    exit_code = EXIT_FAILURE


class UsageError(CLIError):
    """Bad arguments or input the user must fix (exit code 2)."""

    exit_code = EXIT_USAGE


def one_line(error: BaseException) -> str:
    """An exception's message on one line (the form of every `hf-metaembed` error), or its type if it has none."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def exit_code(error: BaseException) -> int:
    """The exit code `hf-metaembed` reports `error` with (see `EXIT_CODES`)."""
    if isinstance(error, CLIError):
        return error.exit_code
    return EXIT_USAGE if isinstance(error, USAGE_ERRORS) else EXIT_FAILURE


# the library's hints name Python options; a command-line user gets the flag that does the same (in this order)
PYTHON_TO_CLI = (
    (
        re.compile(
            r"a model config with window_size, e\.g\. (\d+) for ESM-2, and MetaEmbedProcessor\(\.\.\., "
            r"long_sequences='window'\)"
        ),
        r"--long-sequences window --window-size N, e.g. \1 for ESM-2",
    ),
    (
        re.compile(r"MetaEmbedConfig window_size, with MetaEmbedProcessor\(long_sequences='window'\)"),
        "--long-sequences window --window-size N",
    ),
    (re.compile(r"MetaEmbedProcessor\(\.\.\., ?long_sequences='window'\)"), "--long-sequences window"),
    (re.compile(r"\blong_sequences=['\"]window['\"]"), "--long-sequences window"),
    (re.compile(r"\bunknown_residues=['\"]x['\"]"), "--unknown-residues x"),
    (re.compile(r"\bsmaller window_size\b"), "smaller --window-size"),
    (re.compile(r"\btruncation=True\b"), "--truncation"),
    (re.compile(r"\bchain_separator=(?=\s)"), "--chain-separator"),
    (
        re.compile(
            r"pass backbone_trust_remote_code=True \(or a list with True at position \d+\) to from_backbones "
            r"\(CLI: --backbone-trust-remote-code\), and pin it with backbone_code_revisions=\[\.\.\.\]\. The "
            r"model's own trust_remote_code never applies to its backbones"
        ),
        "add --backbone-trust-remote-code (its code files are then saved with the model and checked on every reload)",
    ),
    (
        re.compile(
            r"pass backbone_trust_remote_code=True \(or a list with True at position \d+\) to compare "
            r"\(CLI: --backbone-trust-remote-code\)"
        ),
        "add --backbone-trust-remote-code (its code files are then copied to the output folder for the cells)",
    ),
    (re.compile(r"build_feature_cache\([^)]*overwrite=True\)"), "--overwrite"),
    (re.compile(r"\boverwrite=True\b"), "--overwrite"),
)


def cli_hints(message: str) -> str:
    """`message` with the Python options it suggests replaced by the command-line flags that do the same."""
    for pattern, flag in PYTHON_TO_CLI:
        message = pattern.sub(flag, message)
    return message


def error_message(command: str, error: BaseException) -> str:
    """`hf-metaembed COMMAND: error: ...` on one line, naming flags where the library names Python options; an
    unexpected failure also names its exception type."""
    detail = cli_hints(one_line(error))
    if exit_code(error) == EXIT_FAILURE and not isinstance(error, CLIError):
        detail = f"{type(error).__name__}: {detail}"
    return f"hf-metaembed {command}: error: {detail}"


def require(module: str, extra_hint: str = DEMO_EXTRA_HINT):
    """Import an optional dependency, or raise a `UsageError` that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and module.split(".")[0] != error.name.split(".")[0]:
            raise
        raise UsageError(f"this command needs the optional package {module.split('.')[0]!r}: {extra_hint}") from None


def check_positive(value: int | None, name: str) -> None:
    """Raise a `UsageError` unless `value` (an optional count given as option `name`) is at least 1."""
    if value is not None and value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value}")


__all__ = [
    "EXIT_CODES",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "USAGE_ERRORS",
    "CLIError",
    "UsageError",
    "check_positive",
    "cli_hints",
    "error_message",
    "exit_code",
    "one_line",
    "require",
]
