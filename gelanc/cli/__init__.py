"""The `gelanc` command line: a thin layer over the Python API.

Exit status: 0 ok, 1 runtime failure, 2 user error (bad spec, bad arguments).
Heavy modules are imported inside the commands, so `gelanc --help` starts at once.
The commands live by group beside this module (compiler, tools, training, interop),
the parser in parser.py, what they share in common.py; here is the one entry point
and how a failure becomes an exit status.
"""

from __future__ import annotations

import sys

from gelanc.cli.common import EXIT_FAIL, EXIT_OK, EXIT_USER
from gelanc.cli.parser import build_parser
from gelanc.errors import UserError

__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_USER", "build_parser", "main"]

# what `pip install gelanc[torch]` adds to the torch-free compiler (pyproject.toml)
TORCH_EXTRA = {"torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "pycocotools", "tqdm", "matplotlib",
               "PIL"}


def main(argv: list[str] | None = None) -> int:
    """Run one command; its failures become one line on stderr and an exit status."""
    from gelanc.interrupts import held_during_imports
    from gelanc.terminal import clean_output

    try:
        with held_during_imports(), clean_output():
            return _run(argv)
    except KeyboardInterrupt:  # wherever it lands: in a command, in an import, in an error handler
        print("gelanc: interrupted", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:  # `gelanc … | head`: the reader has all it wanted
        _quiet_stdout()
        return EXIT_OK


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])  # after the command's name
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    from gelanc.diagnostics import GelError, render

    try:
        return args.func(args)
    except GelError as e:  # a UserError with a span: the located diagnostic
        print(render(e), file=sys.stderr)
        return EXIT_USER
    except UserError as e:  # every other error the input caused (gelanc/errors.py)
        print(f"gelanc: error: {e}", file=sys.stderr)
        return EXIT_USER
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TORCH_EXTRA:
            return _runtime_failure(e)
        print(f"gelanc: error: '{args.command}' needs {e.name}, which the torch extra installs: "
              f"pip install 'gelanc[torch]'", file=sys.stderr)
        return EXIT_FAIL
    except Exception as e:  # noqa: BLE001 - what is left is gelanc's own failure
        return _runtime_failure(e)


def _runtime_failure(e: Exception) -> int:
    """Exit 1 with one line — the error's type and first line — unless GELANC_TRACEBACK is set.

    Libraries' messages can run to pages of C++ frames and may quote a file's content:
    the first line, made printable, is what the user can act on."""
    import os

    from gelanc.safeload import printable

    if os.environ.get("GELANC_TRACEBACK"):
        raise e
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, OSError) and e.strerror:
        first = f"{e.strerror}{f': {e.filename}' if e.filename else ''}"
    print(f"gelanc: error: {type(e).__name__}{': ' if first else ''}{printable(first, 300)} "
          f"(GELANC_TRACEBACK=1 shows where)", file=sys.stderr)
    return EXIT_FAIL


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so Python's exit flush stays silent."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
