"""The qa11-qa20 generators against an independent solver and against the real bAbI training files.

(a) the solver reproduces every answer and supporting-fact list of the real files (this validates it);
(b) on thousands of generated stories the solver agrees with every answer and supporting-fact list, and
    finds each question determined by its story;
(c) generated and real files have the same answer labels and vocabulary, and alike distributions of
    facts per sample and questions per story.

``python -m tests.test_babi_generator_11_20`` prints the comparison table of docs/babi-generator-11-20.md.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from lm2.data.babi.format import find_task_file, read_stories, vocabulary, write_stories
from lm2.data.babi.tasks_11_20 import GENERATORS
from lm2.data.babi.types import Question, Statement, Story
from tests.babi_solvers_11_20 import UnknownSentence, solve
from tests.conftest import shared_path

SRC = Path(__file__).resolve().parents[1] / "src"
TASKS = [f"qa{i}" for i in range(11, 21)]
NUM_STORIES = 2000  # per task, for the solver check (b)
NUM_COMPARED = 1000  # per task, for the comparison with the real files (c): the first of those
# Total-variation distance between two histograms above which they count as different. Every task
# measures <= 0.06 (see the docs); clearly different stories (another task's, or qa14's cut short by
# six lines) measure 0.35-0.8 on facts per sample.
MAX_TV = 0.1
MAX_MEAN_GAP = 0.5  # facts per sample


@cache
def _generated(task: str, n: int, seed: int) -> tuple[Story, ...]:
    rng = random.Random(seed)
    return tuple(GENERATORS[task](rng) for _ in range(n))


def generated(task: str, n: int, seed: int = 0) -> tuple[Story, ...]:
    """The first ``n`` stories of ``task`` from ``seed`` (one rng draws them in turn, so prefixes agree)."""
    return _generated(task, max(n, NUM_STORIES), seed)[:n]


@cache
def real(task: str) -> tuple[Story, ...]:
    return tuple(read_stories(find_task_file(shared_path("babi", "en-train"), task)))


def questions(story: Story) -> list[Question]:
    return [line for line in story.lines if isinstance(line, Question)]


# --- comparison of two sets of stories ------------------------------------------------------------


def facts_per_sample(stories: tuple[Story, ...]) -> Counter[int]:
    return Counter(len(sample.facts) for story in stories for sample in story.samples())


def questions_per_story(stories: tuple[Story, ...]) -> Counter[int]:
    return Counter(len(questions(story)) for story in stories)


def labels(stories: tuple[Story, ...]) -> set[str]:
    return {q.answer for story in stories for q in questions(story)}


def answers(stories: tuple[Story, ...]) -> Counter[str]:
    return Counter(q.answer for story in stories for q in questions(story))


def support_reach(stories: tuple[Story, ...]) -> Counter[int]:
    """How many lines back a question's earliest supporting fact is."""
    return Counter(
        line_id - min(line.supporting)
        for story in stories
        for line_id, line in enumerate(story.lines, start=1)
        if isinstance(line, Question)
    )


def lowercase_vocabulary(stories: tuple[Story, ...]) -> set[str]:
    return {word.lower() for word in vocabulary(stories)}


def total_variation(a: Counter, b: Counter) -> float:
    na, nb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b))


def mean(counts: Counter[int]) -> float:
    return sum(k * v for k, v in counts.items()) / sum(counts.values())


@dataclass(frozen=True)
class Comparison:
    real_facts: float
    generated_facts: float
    facts_tv: float
    questions_tv: float
    answers_tv: float
    support_reach_tv: float  # reported, not required: it measures where questions look back to
    vocabulary_covered: float  # share of the real files' words that the generator uses
    extra_words: frozenset[str]  # words the generator uses that the real files never do
    labels_equal: bool

    @property
    def alike(self) -> bool:
        return (
            self.facts_tv <= MAX_TV
            and self.questions_tv <= MAX_TV
            and self.answers_tv <= MAX_TV
            and abs(self.real_facts - self.generated_facts) <= MAX_MEAN_GAP
        )


def compare(real_stories: tuple[Story, ...], gen_stories: tuple[Story, ...]) -> Comparison:
    real_facts, gen_facts = facts_per_sample(real_stories), facts_per_sample(gen_stories)
    real_words, gen_words = lowercase_vocabulary(real_stories), lowercase_vocabulary(gen_stories)
    return Comparison(
        real_facts=mean(real_facts),
        generated_facts=mean(gen_facts),
        facts_tv=total_variation(real_facts, gen_facts),
        questions_tv=total_variation(questions_per_story(real_stories), questions_per_story(gen_stories)),
        answers_tv=total_variation(answers(real_stories), answers(gen_stories)),
        support_reach_tv=total_variation(support_reach(real_stories), support_reach(gen_stories)),
        vocabulary_covered=len(real_words & gen_words) / len(real_words),
        extra_words=frozenset(gen_words - real_words),
        labels_equal=labels(real_stories) == labels(gen_stories),
    )


# --- the generators themselves --------------------------------------------------------------------


def test_one_generator_per_task() -> None:
    assert list(GENERATORS) == TASKS
    for task in TASKS:
        story = GENERATORS[task](random.Random(0))
        assert story.task == task
        assert story.lines and isinstance(story.lines[0], Statement)
        assert questions(story)


def test_deterministic_given_the_rng() -> None:
    for task in TASKS:
        first = [GENERATORS[task](random.Random(7)) for _ in range(3)]
        again = [GENERATORS[task](random.Random(7)) for _ in range(3)]
        assert first == again
        others = {repr(GENERATORS[task](random.Random(seed)).lines) for seed in range(20)}
        assert len(others) > 10, f"{task}: stories barely change with the seed"


def test_same_stories_in_every_process() -> None:
    # set iteration order changes with the hash seed; the stories must not
    code = (
        "import random; from lm2.data.babi.tasks_11_20 import GENERATORS as G; "
        "from lm2.data.babi.format import format_stories as f; r = random.Random(5); "
        "print(hash('x'), ''.join(f([g(r) for _ in range(30)]) for g in G.values()))"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(SRC)}
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.append(run.stdout.split(" ", 1))
    assert outputs[0][0] != outputs[1][0], "the two processes did not hash differently"
    assert outputs[0][1] == outputs[1][1]


def test_stories_survive_the_file_format(tmp_path) -> None:
    for task in TASKS:
        stories = list(generated(task, 50))
        path = write_stories(stories, tmp_path, task)
        assert path.name.startswith(f"{task}_")
        assert list(read_stories(path)) == stories


# --- (a) the solver on the real files -------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_solver_reproduces_the_real_files(task: str) -> None:
    stories = real(task)
    checked = 0
    for story in stories:
        for question, solution in zip(questions(story), solve(story), strict=True):
            assert solution.answer == question.answer, (task, question, solution)
            valid = {solution.supporting, *solution.alternatives}
            assert question.supporting in valid, (task, question, solution)
            checked += 1
    assert checked == 1000


def test_solver_refuses_sentences_it_does_not_know() -> None:
    story = Story("qa11", [Statement("Mary flew to the moon."), Question("Where is Mary?", "moon", (1,))])
    with pytest.raises(UnknownSentence):
        solve(story)
    story = Story("qa11", [Statement("Mary went to the office."), Statement("Then he went to the garden.")])
    with pytest.raises(UnknownSentence):  # "he" cannot refer to Mary
        solve(story)


def test_solver_flags_undetermined_questions() -> None:
    # qa16: two frogs of different colours, so Greg's colour is not determined
    story = Story(
        "qa16",
        [
            Statement("Lily is a frog."),
            Statement("Lily is green."),
            Statement("Brian is a frog."),
            Statement("Brian is white."),
            Statement("Greg is a frog."),
            Question("What color is Greg?", "white", (5, 3, 4)),
        ],
    )
    assert not solve(story)[0].determined
    # qa18: two chains of facts relate the chocolate to the suitcase
    story = Story(
        "qa18",
        [
            Statement("The chocolate fits inside the box."),
            Statement("The box fits inside the suitcase."),
            Statement("The chocolate fits inside the chest."),
            Statement("The chest fits inside the suitcase."),
            Question("Is the suitcase bigger than the chocolate?", "yes", (2, 1)),
        ],
    )
    solution = solve(story)[0]
    assert solution.answer == "yes" and not solution.determined and len(solution.alternatives) == 2


# --- (b) the solver on generated stories ----------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_every_generated_answer_is_determined_and_right(task: str) -> None:
    for story in generated(task, NUM_STORIES):
        story.samples()  # supporting ids point at earlier statements
        for question, solution in zip(questions(story), solve(story), strict=True):
            assert solution.determined, (task, story, question)
            assert (question.answer, question.supporting) == (solution.answer, solution.supporting), (
                task,
                story,
                question,
                solution,
            )


# --- (c) generated versus real --------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_generated_stories_look_like_the_real_files(task: str) -> None:
    result = compare(real(task), generated(task, NUM_COMPARED))
    assert result.labels_equal, (labels(real(task)), labels(generated(task, NUM_COMPARED)))
    assert result.vocabulary_covered == 1.0
    assert not result.extra_words
    assert result.alike, result


def test_the_comparison_tells_different_distributions_apart() -> None:
    # another task's stories, and qa14 stories cut short, must not pass as alike
    assert not compare(real("qa14"), generated("qa18", NUM_COMPARED)).alike
    assert not compare(real("qa20"), generated("qa11", NUM_COMPARED)).alike
    shortened = tuple(Story(s.task, s.lines[: len(s.lines) - 6]) for s in generated("qa14", NUM_COMPARED))
    assert not compare(real("qa14"), shortened).alike


# --- the table in docs/babi-generator-11-20.md ----------------------------------------------------


def comparison_table(num_stories: int, seed: int) -> str:
    rows = [
        "| task | real facts/sample | generated facts/sample | facts TV | questions/story TV | answers TV "
        "| support reach TV | vocabulary covered | extra words | label sets equal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in TASKS:
        r = compare(real(task), generated(task, num_stories, seed))
        rows.append(
            f"| {task} | {r.real_facts:.2f} | {r.generated_facts:.2f} | {r.facts_tv:.3f} | "
            f"{r.questions_tv:.3f} | {r.answers_tv:.3f} | {r.support_reach_tv:.3f} | "
            f"{r.vocabulary_covered:.0%} | {len(r.extra_words)} | "
            f"{'yes' if r.labels_equal else 'no'} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=NUM_COMPARED, help="generated stories per task")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(comparison_table(args.stories, args.seed))
