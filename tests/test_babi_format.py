import pytest

from lm2.data.babi.format import format_stories, read_stories, write_stories
from lm2.data.babi.types import Question, Statement, Story, parse_tasks
from tests.conftest import shared_path


def test_round_trip(tmp_path):
    story = Story(
        "qa1", [Statement("Mary moved to the bathroom."), Question("Where is Mary?", "bathroom", (1,))]
    )
    path = write_stories([story, story], tmp_path, "qa1")
    assert path.name == "qa1_single-supporting-fact_train.txt"
    stories = list(read_stories(path))
    assert stories == [story, story]
    assert format_stories(stories) == path.read_text()
    (sample,) = stories[0].samples()
    assert sample.facts == ["Mary moved to the bathroom."] and sample.supporting == (0,)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 Mary went home.\n3 John left.\n", ":2: line id 3 out of order"),
        ("1 Mary went home.\n2 Where is Mary?\tkitchen\tx\n", ":2: supporting ids must be integers"),
        (
            "1 Mary went home.\n2 Where is Mary?\tkitchen\t2\n",
            ":2: supporting ids [2] must point at earlier lines",
        ),
        ("1 Mary went home.\nMary\n", ":2: expected '<id> <text>'"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "qa1_x_train.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        list(read_stories(path))


def test_parse_tasks():
    assert parse_tasks("qa1, 3,qa2-qa4") == ["qa1", "qa3", "qa2", "qa4"]
    assert len(parse_tasks("all")) == 20
    with pytest.raises(ValueError, match="unknown bAbI task 'qa21'"):
        parse_tasks("qa21")


def test_reads_every_real_file():
    for path in sorted(shared_path("babi", "en-train").glob("qa*_train.txt")):
        samples = [s for story in read_stories(path) for s in story.samples()]
        assert len(samples) == 1000, path.name
