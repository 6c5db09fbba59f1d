"""What every stage script shares: its common options, clean errors and a clean Ctrl-C.

The options that several stages take are typed once here, as `Annotated` aliases that carry
their help (`--params`, and the critic's files: constitution principles, the two judge
templates, the trained critic). A stage writes `principles: PrinciplesFile`; one that takes
`--params` writes `params_file: ParamsFile = PARAMS_FILE`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from minicc.errors import UserError

PARAMS_FILE = Path("params.yaml")
"""`--params` when not given: the repository's parameters, as DVC reads them."""
ParamsFile = Annotated[Path, typer.Option("--params", help="Parameters file.")]
PrinciplesFile = Annotated[Path, typer.Option(help="Constitution principles (YAML).")]
InstructTemplateFile = Annotated[
    Path, typer.Option(help="Judge template for critique.style=instruct.")
]
BaseTemplateFile = Annotated[Path, typer.Option(help="Judge template for critique.style=base.")]
TrainedCriticDir = Annotated[
    Path,
    typer.Option(help="The trained critic (train_critic's directory), read for probe and lora."),
]


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
