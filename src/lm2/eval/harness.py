"""Evaluate a checkpoint with EleutherAI's lm-evaluation-harness (optional extra: ``pip install 'lm2[eval]'``).

The harness is imported only when used. The model is loaded by :func:`lm2.eval.model_folder.load_model_and_tokenizer`
(so LM2 and the baselines are registered and a broken folder is reported by file) and handed to the
harness's ``HFLM`` as an object. Its built-in tasks download their data from the hub; offline, point
``--include-path`` at a folder of task YAMLs whose ``dataset_path`` is a local json/parquet folder.
"""

from __future__ import annotations

from typing import Any

from lm2.eval.model_folder import load_model_and_tokenizer


def _harness() -> Any:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise ValueError(
            f"lm-evaluation-harness is not installed ({err}); install the extra: pip install 'lm2[eval]'"
        ) from err
    return lm_eval, HFLM, TaskManager


def make_lm(model_dir: str, device: str = "auto", dtype: str = "float32", batch_size: int = 1) -> Any:
    """An ``lm_eval`` HFLM wrapping the checkpoint in ``model_dir``."""
    _, HFLM, _ = _harness()
    model, tokenizer = load_model_and_tokenizer(model_dir, device, dtype)
    max_length = getattr(model.config, "max_position_embeddings", None) or 2048
    return HFLM(
        pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size, max_length=max_length
    )


def run_harness(
    model_dir: str,
    tasks: list[str],
    include_path: str | None = None,
    shots: int | None = None,
    limit: int | None = None,
    device: str = "auto",
    dtype: str = "float32",
    batch_size: int = 1,
    builtin_tasks: bool = True,
) -> dict[str, Any]:
    """The harness's ``simple_evaluate`` results (``results[task][metric]``) for ``tasks``."""
    lm_eval, _, TaskManager = _harness()
    if not builtin_tasks and not include_path:
        raise ValueError("without the built-in tasks, give --include-path with task YAMLs")
    # Indexing the ~15k built-in task configs takes half a minute; --no-builtin-tasks skips it.
    manager = TaskManager(include_path=include_path, include_defaults=builtin_tasks)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown harness task(s) {', '.join(unknown)}; add a task YAML with --include-path")
    lm = make_lm(model_dir, device, dtype, batch_size)
    return lm_eval.simple_evaluate(
        model=lm, tasks=tasks, num_fewshot=shots, limit=limit, task_manager=manager
    )


