"""The BABILong answer matchers: ``words`` (whole words, headers skipped, option lists rejected) and
``babilong`` (the official rules: first sentence by ".", substring labels)."""

from __future__ import annotations

import pytest

from lm2.eval.matcher import METRICS, TASK_LABELS, babilong_correct, first_sentence, is_correct, labels_for


@pytest.mark.parametrize(
    "prediction, target, question, task, expected",
    [
        # qa1-qa4: rooms; a full sentence or a bare word both count.
        ("kitchen", "kitchen", "Where is Mary?", "qa1", True),
        (" Mary is in the Kitchen.", "kitchen", "Where is Mary?", "qa1", True),
        ("bathroom", "kitchen", "Where is Mary?", "qa1", False),
        ("kitchen or garden", "kitchen", "Where is Mary?", "qa1", False),  # two labels: a hedge is wrong
        ("", "kitchen", "Where is Mary?", "qa1", False),
        # Labels the question mentions are ignored: "before the kitchen" does not make two labels.
        (
            "The milk was in the hallway before the kitchen.",
            "hallway",
            "Where was the milk before the kitchen?",
            "qa3",
            True,
        ),
        ("kitchen", "hallway", "Where was the milk before the kitchen?", "qa3", False),
        ("The office is north of the kitchen", "office", "What is north of the kitchen?", "qa4", True),
        # Only the first sentence counts.
        ("garden. Or maybe the kitchen.", "garden", "Where is John?", "qa1", True),
        (
            "I think so.\nThe answer is garden.",
            "garden",
            "Where is John?",
            "qa1",
            False,
        ),  # a sentence, no header
        ("garden\nkitchen", "garden", "Where is John?", "qa1", True),
        # qa5: names in the question are not answers.
        ("Fred gave the milk to Bill.", "milk", "What did Fred give to Bill?", "qa5", True),
        ("Jeff", "Jeff", "Who gave the football to Fred?", "qa5", True),
        ("Fred", "Jeff", "Who gave the football to Fred?", "qa5", False),
        # qa6 / qa9 / qa10: "no" must be a word, not part of "not", "know", "north" or "nothing".
        ("no", "no", "Is John in the kitchen?", "qa6", True),
        ("I do not know", "no", "Is John in the kitchen?", "qa6", False),
        ("nothing", "no", "Is John in the kitchen?", "qa9", False),
        ("No, he is not.", "no", "Is John in the kitchen?", "qa9", True),
        ("yes", "no", "Is John in the kitchen?", "qa9", False),
        ("maybe", "maybe", "Is Bill in the park?", "qa10", True),
        ("yes or no", "maybe", "Is Bill in the park?", "qa10", False),
        # qa7: a correct "none" counts (a substring matcher finds "one" inside it).
        ("none", "none", "How many objects is Daniel carrying?", "qa7", True),
        ("None.", "none", "How many objects is Daniel carrying?", "qa7", True),
        ("none", "one", "How many objects is Daniel carrying?", "qa7", False),
        ("one", "one", "How many objects is Daniel carrying?", "qa7", True),
        ("someone has two", "two", "How many objects is Daniel carrying?", "qa7", True),
        # qa8: exactly the listed items, in any order; "nothing" for none.
        ("apple,milk", "apple,milk", "What is Sandra carrying?", "qa8", True),
        ("milk and apple", "apple,milk", "What is Sandra carrying?", "qa8", True),
        ("apple", "apple,milk", "What is Sandra carrying?", "qa8", False),
        ("apple, milk, football", "apple,milk", "What is Sandra carrying?", "qa8", False),
        ("nothing", "nothing", "What is Sandra carrying?", "qa8", True),
        ("nothing, milk", "nothing", "What is Sandra carrying?", "qa8", False),
        ("football", "football", "What is Sandra carrying?", "qa8", True),
        ("footballs", "football", "What is Sandra carrying?", "qa8", False),
        # qa19: the path in order.
        ("n,e", "n,e", "How do you go from the kitchen to the garden?", "qa19", True),
        ("north then east", "n,e", "How do you go from the kitchen to the garden?", "qa19", True),
        ("e,n", "n,e", "How do you go from the kitchen to the garden?", "qa19", False),
    ],
)
def test_matcher_cases(prediction: str, target: str, question: str, task: str, expected: bool) -> None:
    assert is_correct(prediction, target, question, task) is expected


def test_substring_matching_would_be_wrong_here() -> None:
    # The authors' substring rule would score all three of these the other way round.
    cases = [
        ("none", "none", "qa7", True),
        ("I do not know", "no", "qa6", False),
        ("nothing", "no", "qa9", False),
    ]
    for prediction, target, task, expected in cases:
        substring_labels = [label for label in labels_for(task) if label in prediction.lower()]
        substring_verdict = substring_labels == [target]
        assert substring_verdict is not expected
        assert is_correct(prediction, target, "How many objects is Mary carrying?", task) is expected


def test_tasks_without_a_fixed_label_set_use_the_labels_given() -> None:
    labels = labels_for("qa15", ["wolf", "mouse", "cat", "sheep"])
    assert is_correct("wolf", "wolf", "What is Gertrude afraid of?", "qa15", labels)
    assert not is_correct("a wolf or a cat", "wolf", "What is Gertrude afraid of?", "qa15", labels)
    assert not is_correct("cat", "wolf", "What is Gertrude afraid of?", "qa15", labels)


def test_first_sentence() -> None:
    assert first_sentence("\n\n kitchen. garden") == "kitchen"
    assert first_sentence("yes! no") == "yes"
    assert first_sentence("") == ""


def test_empty_target_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty target"):
        is_correct("kitchen", " ", "Where is Mary?", "qa1")


WHO = "Who gave the football?"
APPLE = "Where is the apple?"
NORTH_OF = "What is the hallway north of?"
COUNT = "How many objects is Daniel carrying?"
CARRY = "What is Sandra carrying?"
PATH = "How do you go from the kitchen to the garden?"


@pytest.mark.parametrize(
    "prediction, target, question, task, by_words, by_babilong",
    [
        # Header lines without a label: skipped by words (the official metric reads across line breaks).
        (
            "### Response\n\nThe football is in the hallway.",
            "hallway",
            "Where is the football?",
            "qa2",
            True,
            True,
        ),
        ("Answer:\nkitchen", "kitchen", "Where is Mary?", "qa1", True, True),
        ("===\nJeff\n\nExplanation: the football went to Jeff", "Jeff", WHO, "qa5", True, True),
        ("**Solution:**\n\nMary is in the garden.", "garden", "Where is Mary?", "qa1", True, True),
        ("- Answer:\n- garden", "garden", "Where is Mary?", "qa1", True, True),
        (
            "### Response\n\nThe football is in the hallway.",
            "kitchen",
            "Where is the football?",
            "qa2",
            False,
            False,
        ),
        # A label-free sentence, field or line of prose is the answer, not a header.
        (
            "The events are as follows:\n1. Bill took it",
            "Bill",
            "Who received the football?",
            "qa5",
            False,
            False,
        ),
        ("I think so.\nThe answer is garden.", "garden", "Where is John?", "qa1", False, False),
        (
            "Answer: John\n\nQuestion: Who handed the apple to Mary?",
            "Mary",
            "Who gave the apple?",
            "qa5",
            False,
            True,
        ),
        # A repeat of the question is skipped; another question is a sentence, and the answer.
        ("Where is the apple?\nThe apple is in the garden.", "garden", APPLE, "qa2", True, True),
        ("Question: Where is the apple?\n\ngarden", "garden", APPLE + " ", "qa2", True, True),
        ("Where is the milk?\nThe apple is in the garden.", "garden", APPLE, "qa2", False, True),
        (
            "[Illustration: A man]\n\nThe hallway is north of the kitchen.",
            "kitchen",
            NORTH_OF,
            "qa4",
            True,
            True,
        ),
        # Option lists stay rejected, whatever their markers and even with one label among the options.
        ("A) The office\nB) The garden", "office", "What is north of the kitchen?", "qa4", False, False),
        ("A. Mary\nB. Aggie\nC. Jimmy", "Mary", WHO, "qa5", False, False),
        ("Options:\n(A) apple\n(B) banana", "apple", "What did Fred give to Bill?", "qa5", False, True),
        ("A: In the office\n\nB: In the bedroom", "office", "Where is Sandra?", "qa1", False, False),
        ("- The hallway.\n- The kitchen.", "hallway", "What is east of the office?", "qa4", False, True),
        ("1. kitchen\n2. garden", "kitchen", "Where is Mary?", "qa1", False, False),
        ("[A] Mary\n\n[B] Jeff", "Mary", WHO, "qa5", False, False),
        (
            "[34]\n\nThe office is north of the garden.",
            "office",
            "What is north of the garden?",
            "qa4",
            True,
            True,
        ),
        # One option alone, or an item that names a field (a turn of an invented dialogue), is an answer.
        ("A) The office", "office", "What is north of the kitchen?", "qa4", True, True),
        ("- response: Mary\n\n- support: Bill handed it to Mary.", "Mary", WHO, "qa5", True, False),
        # "No." is no list marker.
        ("No. He is not.\nNo. He is in the hallway.", "no", "Is John in the kitchen?", "qa6", True, True),
        # Invented follow-up questions and explanations are cut off by words; the official metric reads
        # on to the first "." and finds the labels of the follow-up too.
        (
            "Answer: Fred\n\nQuestion: Who did Fred give the milk to?\nAnswer: Bill",
            "Fred",
            WHO,
            "qa5",
            True,
            False,
        ),
        (
            "Answer: bedroom\n\nContext: The office is west of the garden.",
            "bedroom",
            "What is east?",
            "qa4",
            True,
            False,
        ),
        ("hallway\nQuestion: Where is the kitchen?", "hallway", "Where is Mary?", "qa1", True, False),
        ("hallway. Explanation: Mary left the kitchen.", "hallway", "Where is Mary?", "qa1", True, True),
        ("The garden <context> The kitchen is", "garden", "Where is Mary?", "qa1", True, True),
        # Substrings: the official metric finds "mary" in "primary", "garden" in "gardens", "fred" in "freddy".
        ("Jeff, the primary giver", "Jeff", WHO, "qa5", True, False),
        ("In the Luxembourg Gardens.", "garden", "Where is Daniel?", "qa1", False, True),
        ("Freddy gave it.", "Fred", WHO, "qa5", False, True),
        # Labels the question mentions are removed by both.
        (
            "In the hallway before the kitchen.",
            "hallway",
            "Where was the milk before the kitchen?",
            "qa3",
            True,
            True,
        ),
        # qa6 / qa9 / qa17 / qa18 yes-no: "no" inside "not", "know", "north", "nothing" and "None".
        ("yes", "yes", "Is John in the kitchen?", "qa6", True, True),
        ("No, he is not.", "no", "Is John in the kitchen?", "qa6", True, True),
        ("I do not know", "no", "Is John in the kitchen?", "qa6", False, True),
        ("Yes, he went north.", "yes", "Is John in the hallway?", "qa6", True, False),
        ("nothing", "no", "Is John in the kitchen?", "qa9", False, True),
        ("None", "no", "Is the box bigger than the chest?", "qa17", False, True),
        ("no", "no", "Is the kitchen south of the garden?", "qa18", True, True),
        # qa7 counts: "none" holds "one" for a substring search.
        ("None.", "none", COUNT, "qa7", True, False),
        ("none", "none", COUNT, "qa7", True, False),
        ("one", "one", COUNT, "qa7", True, True),
        ("Daniel is carrying two objects.", "two", COUNT, "qa7", True, True),
        ("three", "two", COUNT, "qa7", False, False),
        # qa8 lists: the exact set, any order; "nothing" alone.
        ("apple,milk", "apple,milk", CARRY, "qa8", True, True),
        ("Sandra is carrying the milk and the apple.", "apple,milk", CARRY, "qa8", True, True),
        ("- apple\n- milk", "apple,milk", CARRY, "qa8", True, True),
        ("apple", "apple,milk", CARRY, "qa8", False, False),
        ("apple, milk, football", "apple,milk", CARRY, "qa8", False, False),
        ("Nothing.", "nothing", CARRY, "qa8", True, True),
        ("nothing but the milk", "milk", CARRY, "qa8", False, False),
        ("milk and apple", "apple, milk", CARRY, "qa8", True, False),  # official: items are not stripped
        # qa10 "maybe".
        ("maybe", "maybe", "Is Bill in the park?", "qa10", True, True),
        ("Maybe.", "maybe", "Is Bill in the park?", "qa10", True, True),
        ("yes or no", "maybe", "Is Bill in the park?", "qa10", False, False),
        ("maybe yes", "maybe", "Is Bill in the park?", "qa10", False, False),
        # qa19 paths: the official labels are "n,e"-style strings; words reads directions in order.
        ("n,e", "n,e", PATH, "qa19", True, True),
        ("north, east", "n,e", PATH, "qa19", True, False),
        ("e,n", "n,e", PATH, "qa19", False, False),
        # Tasks with official label sets past qa10.
        ("wolf", "wolf", "What is Gertrude afraid of?", "qa15", True, True),
        ("a wolf or a cat", "wolf", "What is Gertrude afraid of?", "qa15", False, False),
        ("He is thirsty.", "thirsty", "Why did Sumit go to the kitchen?", "qa20", True, True),
        ("", "kitchen", "Where is Mary?", "qa1", False, False),
    ],
)
def test_both_metrics(
    prediction: str, target: str, question: str, task: str, by_words: bool, by_babilong: bool
) -> None:
    assert is_correct(prediction, target, question, task, metric="words") is by_words
    assert is_correct(prediction, target, question, task, metric="babilong") is by_babilong
    assert babilong_correct(prediction, target, question, task) is by_babilong


def test_official_label_sets() -> None:
    assert METRICS == ("words", "babilong")
    assert sorted(TASK_LABELS, key=lambda t: int(t[2:])) == [f"qa{i}" for i in range(1, 21)]
    assert TASK_LABELS["qa7"] == {"none", "one", "two", "three"}
    assert len(TASK_LABELS["qa19"]) == 12 and "n,e" in TASK_LABELS["qa19"]
    assert all(label == label.lower() for labels in TASK_LABELS.values() for label in labels)


def test_babilong_metric_uses_only_the_official_labels() -> None:
    # words adds the targets it is given as labels; the official metric never does.
    assert is_correct("zebra", "zebra", "What is Gertrude afraid of?", "qa15", ["zebra"], metric="words")
    assert not is_correct(
        "zebra", "zebra", "What is Gertrude afraid of?", "qa15", ["zebra"], metric="babilong"
    )
    with pytest.raises(ValueError, match="qa1-qa20 only"):
        babilong_correct("x", "x", "q", "qa21")
    with pytest.raises(ValueError, match="unknown metric 'exact'; valid: words, babilong"):
        is_correct("kitchen", "kitchen", "Where is Mary?", "qa1", metric="exact")  # type: ignore[arg-type]
