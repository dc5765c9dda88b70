"""Options of `adapterkit train/eval/predict` for task types on the user's own files."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from adapterkit.errors import AdapterkitError

TaskTypeOpt = Annotated[Optional[str], typer.Option(
    "--task-type", help="Train on your files as: classification, regression, multilabel, token-classification, "
                        "extractive-qa or causal-lm (with --train-file; instead of --task).")]
TrainFileOpt = Annotated[Optional[str], typer.Option(
    "--train-file", help="Training data: CSV, TSV, JSONL, Parquet; SQuAD JSON (extractive-qa); CoNLL column file "
                         "(token-classification); .txt or JSONL (causal-lm).")]
ValidationFileOpt = Annotated[Optional[str], typer.Option(
    "--validation-file", help="Validation data (same format). Default: a seeded split of --train-file "
                              "(--validation-fraction), stratified by label.")]
TestFileOpt = Annotated[Optional[str], typer.Option(
    "--test-file", help="Test data, scored once with the best weights at the end.")]
TextColumnOpt = Annotated[Optional[str], typer.Option(
    "--text-column", help="Column with the text (causal-lm: the prompt). Default: guessed (text, sentence, review, ...).")]
TextPairColumnOpt = Annotated[Optional[str], typer.Option(
    "--text-pair-column", help="Column with the second text of a pair. Default: guessed from the text column "
                               "(sentence1 -> sentence2, premise -> hypothesis, ...), else none.")]
LabelColumnOpt = Annotated[Optional[str], typer.Option(
    "--label-column", help="Column with the label (multilabel: a list or a , ; | separated cell; token-classification "
                           "JSONL: the tag list; causal-lm: the response). Default: guessed (label, labels, class, ...).")]
TagSchemeOpt = Annotated[Optional[str], typer.Option(
    "--tag-scheme", help="token-classification: iob1, iob2 or bioes. Default: detected from the tags (iob1 is "
                         "trained as iob2).")]
ValidationFractionOpt = Annotated[float, typer.Option(
    "--validation-fraction", help="Share of --train-file held out for validation when there is no --validation-file.")]
ThresholdOpt = Annotated[float, typer.Option("--threshold", help="multilabel: predict a label when its sigmoid >= this.")]
DocStrideOpt = Annotated[int, typer.Option(
    "--doc-stride", help="extractive-qa: tokens shared by consecutive windows of a long context (at most a quarter of "
                         "--max-seq-len).")]
MaxAnswerOpt = Annotated[int, typer.Option("--max-answer-length", help="extractive-qa: longest answer in tokens.")]
NBestOpt = Annotated[int, typer.Option("--n-best", help="extractive-qa: start and end candidates per window.")]
MaxNewTokensOpt = Annotated[int, typer.Option("--max-new-tokens", help="causal-lm: tokens `predict` generates.")]
EvalStepsOpt = Annotated[Optional[int], typer.Option(
    "--eval-steps", help="Evaluate every N optimizer steps (and at the end of each epoch). Default: once per epoch.")]
AccumulationOpt = Annotated[int, typer.Option(
    "--gradient-accumulation-steps", help="Batches whose gradients are averaged into one optimizer step.")]
PatienceOpt = Annotated[Optional[int], typer.Option(
    "--early-stopping-patience", help="Stop after N evaluations without a better main metric. Default: never.")]


def data_files(task_type, train_file, validation_file, test_file, text_column, text_pair_column, label_column,
               tag_scheme, validation_fraction):
    """The DataFiles of `--task-type ... --train-file ...`, or None for a GLUE --task run."""
    if task_type is None:
        if train_file or validation_file or test_file:
            raise AdapterkitError("--train-file needs --task-type (classification, regression, multilabel, "
                                  "token-classification, extractive-qa, causal-lm)")
        return None
    if not train_file:
        raise AdapterkitError(f"--task-type {task_type} needs --train-file")
    from adapterkit.tasks.load import DataFiles

    return DataFiles(train=train_file, validation=validation_file, test=test_file, text_column=text_column,
                     text_pair_column=text_pair_column, label_column=label_column, tag_scheme=tag_scheme,
                     validation_fraction=validation_fraction)
