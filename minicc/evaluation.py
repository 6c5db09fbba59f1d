"""How the evaluation answers: the same code and decoding for the baseline and the fine-tuned model.

Both models answer through `minicc.generation.answer_prompts` with the plan built here from
the `evaluate` params and the same seed, and their rows use the same keys (`<prompt_id>/<k>`),
so with sampling both draw from the same per-batch random streams. Rows are `Candidate`
records, which the critic already reads.
"""

from minicc.generation import AnswerPlan, Decoding
from minicc.params import EvaluateParams


def evaluation_plan(params: EvaluateParams) -> AnswerPlan:
    """`num_samples` answers per prompt with the declared decoding (greedy by default)."""
    decoding = Decoding(
        do_sample=params.do_sample,
        temperature=params.temperature,
        top_p=params.top_p,
        max_new_tokens=params.max_new_tokens,
    )
    return AnswerPlan(params.num_samples, decoding, params.batch_size, "evaluate")
