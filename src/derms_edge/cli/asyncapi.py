"""``derms-edge asyncapi``: write (or check) the AsyncAPI document of the MQTT contract."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the command to the command line."""
    asyncapi = commands.add_parser(
        "asyncapi", help="write the AsyncAPI document of the MQTT contract from the payload models"
    )
    asyncapi.add_argument(
        "--check", action="store_true", help="only compare: exit 1 if the file is out of date"
    )
    asyncapi.add_argument("--output", type=Path, help="default: docs/asyncapi.yaml")
    asyncapi.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Write the document to ``--output``; with ``--check``, only compare (1 if it differs)."""
    import difflib  # 0.2 MB that every other command, `run` first, would carry

    from derms_edge.northbound.asyncapi import DEFAULT_OUTPUT, render  # the models' schemas

    output: Path = args.output or DEFAULT_OUTPUT
    text = render()
    if not args.check:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        print(f"{output}: written")
        return 0
    try:
        committed = output.read_text(encoding="utf-8")
    except FileNotFoundError:
        print(
            f"{output}: no such file (run from the repository root, or give --output)",
            file=sys.stderr,
        )
        return 1
    if committed == text:
        print(f"{output}: up to date")
        return 0
    diff = difflib.unified_diff(
        committed.splitlines(keepends=True),
        text.splitlines(keepends=True),
        fromfile=f"{output} (the file)",
        tofile=f"{output} (from the models)",
        n=1,
    )
    print(
        f"{output} differs from what the payload models generate; run `derms-edge asyncapi"
        + ("" if output == DEFAULT_OUTPUT else f" --output {output}")
        + "` and commit the result:",
        file=sys.stderr,
    )
    sys.stderr.writelines(list(diff)[:60])
    return 1
