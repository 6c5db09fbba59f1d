"""What every stage script does around its work: clean errors and a clean Ctrl-C."""

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from minicc.errors import UserError


@contextmanager
def stage_errors(stage: str) -> Iterator[None]:
    """Turn a UserError into one line on stderr and exit code 2; Ctrl-C into exit code 130.

    Unexpected exceptions keep their traceback: they are bugs, and hiding them would hide the
    evidence. Finished batches live in the resume log, so an interrupted stage loses nothing.
    """
    try:
        yield
    except UserError as error:
        typer.echo(f"{stage}: error: {error}", err=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        typer.echo(
            f"{stage}: interrupted; finished batches are kept and the next run resumes them",
            err=True,
        )
        raise typer.Exit(code=130) from None
