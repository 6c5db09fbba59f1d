"""Greedy generation with frozen weights (as under an applied adapter), the last position passed
to the output layer as a strided slice (`logits_to_keep=1`, the old form) and as an index
tensor (the pipeline's `LoadedModel.last_logits_only`), side by side in one process.

    .venv/bin/python benchmarks/bench_adapter_head.py --model smollm2-135m-instruct
    .venv/bin/python benchmarks/bench_adapter_head.py --model gemma3-270m   # make install-gemma

Prints JSON: seconds per form, unfrozen and frozen, and whether the outputs agree. The cost of
the old form grows with the vocabulary (see the `last_logits_only` docstring in minicc/models.py).
"""

import dataclasses
import json
from pathlib import Path
from time import perf_counter
from typing import Annotated, Any

import torch
import typer

from minicc.generation import Decoding, Request, complete
from minicc.models import LoadedModel, load_model
from minicc.params import load_params


def _timed(loaded: LoadedModel, requests: list[Request], decoding: Decoding) -> tuple[float, Any]:
    complete(loaded, requests[:2], dataclasses.replace(decoding, max_new_tokens=2), 0)  # warm-up
    started = perf_counter()
    out = complete(loaded, requests, decoding, 0)
    return round(perf_counter() - started, 2), out


def main(
    model: Annotated[
        str, typer.Option(help="Model spec (a bundled alias, a directory, a Hub id).")
    ],
    prompts: Annotated[int, typer.Option(help="Prompts in the one batch.")] = 16,
    new_tokens: Annotated[int, typer.Option(help="Greedy tokens per prompt.")] = 24,
    params_file: Annotated[Path, typer.Option("--params")] = Path("params.yaml"),
) -> None:
    loaded = load_model(model, load_params(params_file).models)
    if not loaded.last_logits_only:
        raise typer.BadParameter(f"{model}: its forward() has no logits_to_keep")
    sliced = dataclasses.replace(loaded, last_logits_only={"logits_to_keep": 1})  # type: ignore[dict-item]
    requests = [
        Request(f"r{i}", f"User: Give me tip number {i} for baking bread.\nAssistant:")
        for i in range(prompts)
    ]
    decoding = Decoding(do_sample=False, temperature=1.0, top_p=1.0, max_new_tokens=new_tokens)
    unfrozen_s, reference = _timed(loaded, requests, decoding)
    loaded.model.requires_grad_(False)
    index_s, by_index = _timed(loaded, requests, decoding)
    slice_s, by_slice = _timed(sliced, requests, decoding)
    result = {
        "model": loaded.model_id,
        "torch_threads": torch.get_num_threads(),
        "unfrozen_s": unfrozen_s,
        "frozen_index_s": index_s,
        "frozen_slice_s": slice_s,
        "slice_over_index": round(slice_s / index_s, 2),
        "same_outputs": by_index == reference == by_slice,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    typer.run(main)
