"""The training data: the dataset file found in the data directory (as Kaito finds it), loaded
with ``datasets`` from local files only, its record shape detected and converted to one of TRL's
formats, then shuffled and split as DatasetConfig says. Training itself is ``train``'s."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset  # type: ignore[import-untyped]  # no py.typed marker

__all__ = ["DatasetError", "Shape", "TrainingData", "find_dataset_file", "load_training_data"]

# Substrings of a file name that select the loader, in the order they are tried.
EXTENSIONS = ("parquet", "arrow", "json", "csv")
_SUFFIXES = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".arrow": "arrow",
}

ACCEPTED_SHAPES = (
    "conversational (messages: a list of {role, content}), "
    "prompt/completion (prompt, completion), "
    "dolly (instruction, optional context, response), "
    "or plain text (text)"
)


class DatasetError(ValueError):
    """No usable dataset: none found, unreadable, or records of a shape TRL cannot train on."""


class Shape(StrEnum):
    """The TRL dataset format the records were converted to."""

    CONVERSATIONAL = "conversational"
    PROMPT_COMPLETION = "prompt-completion"
    LANGUAGE_MODELING = "language-modeling"


@dataclass(frozen=True, slots=True)
class TrainingData:
    """What the trainer gets: the training split, the evaluation split (None when
    ``train_test_split`` is 1), the TRL format of both, and the file they came from."""

    train: Dataset
    eval: Dataset | None
    shape: Shape
    source: Path


def find_dataset_file(data_dir: Path) -> Path:
    """The first file under ``data_dir`` (sorted by relative path) whose name contains csv, json,
    parquet or arrow, as Kaito's job picks it (``.jsonl`` matches json)."""
    if not data_dir.is_dir():
        raise DatasetError(f"data directory {data_dir} does not exist or is not a directory")
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        if _loader_for(path) is not None:
            return path
    raise DatasetError(
        f"no dataset in {data_dir}: expected a file whose name contains "
        f"{', '.join(sorted(EXTENSIONS))} (e.g. train.jsonl or data.parquet)"
    )


def _loader_for(path: Path) -> str | None:
    if path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()]
    name = path.name.lower()
    return next((ext for ext in EXTENSIONS if ext in name), None)


def load_training_data(data_dir: Path, dataset_config: Mapping[str, Any]) -> TrainingData:
    """Find, load, convert, shuffle and split the dataset. ``dataset_config`` is
    ``TuningConfig.dataset``; a relative ``dataset_path`` names a file under ``data_dir``."""
    source = _source_file(data_dir, dataset_config.get("dataset_path"))
    loader = dataset_config.get("dataset_extension") or _loader_for(source)
    if loader is None:
        raise DatasetError(
            f"cannot tell the format of {source}; set DatasetConfig.dataset_extension"
        )
    loaded = _load(source, loader)
    if len(loaded) == 0:
        raise DatasetError(f"the dataset {source} has no records")
    dataset, shape = _to_trl_format(loaded, dataset_config)
    if dataset_config.get("shuffle_dataset", True):
        dataset = dataset.shuffle(seed=dataset_config.get("shuffle_seed", 42))
    split = float(dataset_config.get("train_test_split", 1.0))
    if not 0 < split <= 1:
        raise DatasetError("DatasetConfig.train_test_split: must be in (0, 1]")
    if split == 1:
        return TrainingData(train=dataset, eval=None, shape=shape, source=source)
    parts = dataset.train_test_split(test_size=1 - split, seed=dataset_config.get("shuffle_seed"))
    return TrainingData(train=parts["train"], eval=parts["test"], shape=shape, source=source)


def _source_file(data_dir: Path, dataset_path: str | None) -> Path:
    if not dataset_path:
        return find_dataset_file(data_dir)
    source = data_dir / dataset_path.lstrip("/")
    if not source.is_file():
        raise DatasetError(f"DatasetConfig.dataset_path: {source} is not a file")
    return source


def _load(source: Path, loader: str) -> Dataset:
    """``load_dataset(<loader>, data_files=...)``: the packaged builders read local files only."""
    from datasets import load_dataset  # noqa: PLC0415 -- heavy; only when training

    try:
        dataset = load_dataset(loader, data_files=str(source), split="train")
    except Exception as e:  # any parser error means the same to the user
        raise DatasetError(f"cannot read {source} as {loader}: {e}") from e
    return dataset


def _to_trl_format(dataset: Dataset, config: Mapping[str, Any]) -> tuple[Dataset, Shape]:
    """Rename the configured columns, then keep or convert the records by their shape."""
    dataset = _rename_configured_columns(dataset, config)
    columns = set(dataset.column_names)
    if "messages" in columns:
        _check_messages(dataset)
        return dataset.select_columns(["messages"]), Shape.CONVERSATIONAL
    if {"prompt", "completion"} <= columns:
        return dataset.select_columns(["prompt", "completion"]), Shape.PROMPT_COMPLETION
    if {"instruction", "response"} <= columns:
        return _dolly_to_messages(dataset), Shape.CONVERSATIONAL
    if "text" in columns:
        return dataset.select_columns(["text"]), Shape.LANGUAGE_MODELING
    raise DatasetError(
        f"unrecognised dataset records with the columns {', '.join(dataset.column_names)}; "
        f"accepted shapes: {ACCEPTED_SHAPES}. DatasetConfig.messages_column, context_column and "
        "response_column can name the columns to use"
    )


def _rename_configured_columns(dataset: Dataset, config: Mapping[str, Any]) -> Dataset:
    """messages_column → messages, context_column → context, response_column → response (when
    it is not the default ``text``, which already is the plain-text column's name)."""
    renames = {
        "messages_column": (config.get("messages_column"), "messages"),
        "context_column": (config.get("context_column"), "context"),
        "response_column": (config.get("response_column"), "response"),
    }
    for key, (column, canonical) in renames.items():
        if not column or column == canonical or (key == "response_column" and column == "text"):
            continue
        if column not in dataset.column_names:
            raise DatasetError(
                f"DatasetConfig.{key}: no column {column!r} in the dataset "
                f"(columns: {', '.join(dataset.column_names)})"
            )
        if canonical in dataset.column_names:
            dataset = dataset.remove_columns(canonical)
        dataset = dataset.rename_column(column, canonical)
    return dataset


def _check_messages(dataset: Dataset) -> None:
    turns = dataset[0]["messages"]
    if not _is_conversation(turns):
        raise DatasetError(
            "the messages column must hold lists of {role, content} turns; the first record has "
            f"{str(turns)[:200]}"
        )


def _is_conversation(turns: Any) -> bool:
    return (
        isinstance(turns, Sequence)
        and not isinstance(turns, str)
        and len(turns) > 0
        and all(isinstance(t, Mapping) and {"role", "content"} <= set(t) for t in turns)
    )


def _dolly_to_messages(dataset: Dataset) -> Dataset:
    """A user turn (instruction, then a blank line and the context when there is one) and an
    assistant turn (the response), so that only the response is trained on."""

    def convert(record: dict[str, Any]) -> dict[str, Any]:
        context = record.get("context")
        user = str(record["instruction"])
        if context is not None and str(context).strip():
            user += "\n\n" + str(context)
        return {
            "messages": [
                {"role": "user", "content": user},
                {"role": "assistant", "content": str(record["response"])},
            ]
        }

    return dataset.map(convert, remove_columns=dataset.column_names)
