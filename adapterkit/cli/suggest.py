"""Unknown options get one line with close suggestions (`--epoch` -> `--epochs`), checked before
the command runs. Click's own guess compares whole strings, `--` included, so `--epoch` also
"resembled" `--nproc` and `--push`; here only names at least 75% alike are offered."""
from __future__ import annotations

import difflib

import typer


def unknown_option(app: typer.Typer, argv: list[str]) -> str | None:
    """The error line for the first unknown long option in `argv` (the arguments after the
    program name), or None when every option is known to the command it follows."""
    command = typer.main.get_command(app)
    path = ["adapterkit"]
    for token in argv:
        if token == "--":
            break
        if token.startswith("--"):
            message = _check(command, token, " ".join(path))
            if message:
                return message
        elif not token.startswith("-") and hasattr(command, "commands"):
            sub = command.commands.get(token)  # a group's options take no values: this names a command
            if sub is None:
                return None  # typer reports the unknown command
            command, path = sub, [*path, token]
    return None


def _check(command, token: str, path: str) -> str | None:
    name = token.split("=", 1)[0]
    known = [opt for param in command.params for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--")]
    known.append("--help")
    if name in known:
        return None
    close = difflib.get_close_matches(name[2:], [k[2:] for k in known], n=3, cutoff=0.75)
    hint = f"; did you mean {' or '.join('--' + c for c in close)}?" if close else f"; see `{path} --help`"
    return f"no such option {name}{hint}"
