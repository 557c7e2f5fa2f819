"""The BABILong answer matcher: whole words, first sentence, labels the question mentions ignored."""

from __future__ import annotations

import pytest

from lm2.eval.matcher import first_sentence, is_correct, labels_for


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
        ("I think so.\nThe answer is garden.", "garden", "Where is John?", "qa1", False),
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
