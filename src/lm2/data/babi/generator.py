"""Generate bAbI stories and samples for any task that has a generator.

Generators live in per-range modules (``tasks_1_10``, ``tasks_11_20``), each exporting
``GENERATORS: dict[str, Callable[[random.Random], Story]]``; the registry below merges them.

Seeding: task ``t`` with seed ``s`` draws from its own ``random.Random`` seeded from ``(t, s)``, so its
stories never depend on which other tasks are generated, and a longer run starts with the stories of a
shorter one.
"""

from __future__ import annotations

import hashlib
import importlib
import random
from collections.abc import Callable, Iterator

from lm2.data.babi.types import TASK_SLUGS, Sample, Story, check_task

GeneratorFn = Callable[[random.Random], Story]

# Modules that hold generators, in task order. One still missing from the checkout only leaves its
# tasks without a generator.
GENERATOR_MODULES = ("lm2.data.babi.tasks_1_10", "lm2.data.babi.tasks_11_20")


def _load_registry() -> dict[str, GeneratorFn]:
    registry: dict[str, GeneratorFn] = {}
    for name in GENERATOR_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real import error inside the module
                raise
            continue
        for task, fn in module.GENERATORS.items():
            if task not in TASK_SLUGS:
                raise ValueError(f"{name} registers unknown bAbI task {task!r}")
            if task in registry:
                raise ValueError(f"{name} registers {task}, which another module already has")
            registry[task] = fn
    return dict(sorted(registry.items(), key=lambda kv: int(kv[0][2:])))


GENERATORS: dict[str, GeneratorFn] = _load_registry()


def available_tasks() -> list[str]:
    """Tasks that have a generator, in task order."""
    return sorted(GENERATORS, key=lambda task: int(task[2:]))


def get_generator(task: str) -> tuple[str, GeneratorFn]:
    """The normalised task name and its generator; a clear error for unknown or missing tasks."""
    name = check_task(task)
    if name not in GENERATORS:
        raise ValueError(f"bAbI task {name} has no generator; tasks with one: {', '.join(available_tasks())}")
    return name, GENERATORS[name]


def task_rng(task: str, seed: int) -> random.Random:
    """The random stream of one (task, seed) pair, stable across Python versions and processes."""
    digest = hashlib.sha256(f"lm2-babi:{task}:{seed}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _check_count(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")


def iter_stories(task: str, seed: int) -> Iterator[Story]:
    """The endless stream of ``task``'s stories for ``seed``; every function here takes from its start."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    name, fn = get_generator(task)
    rng = task_rng(name, seed)
    while True:
        yield fn(rng)


def generate_stories(task: str, num_stories: int, seed: int) -> list[Story]:
    """``num_stories`` stories of ``task`` ("qa1", "QA1" or "1"), reproducible from ``seed``."""
    _check_count(num_stories, "num_stories")
    stream = iter_stories(task, seed)
    return [next(stream) for _ in range(num_stories)]


def generate_samples(task: str, num_samples: int, seed: int) -> list[Sample]:
    """Exactly ``num_samples`` samples (one per question, in story order) from the stories it takes."""
    _check_count(num_samples, "num_samples")
    stream = iter_stories(task, seed)
    samples: list[Sample] = []
    while len(samples) < num_samples:
        samples.extend(next(stream).samples())
    return samples[:num_samples]
