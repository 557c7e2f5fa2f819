"""The bAbI world: its vocabulary, sentence templates, and a small simulation of people, rooms and objects.

Every name and verb below was read off the original bAbI training files (en, v1.2), task by task. The
``World`` keeps two things apart: the *true* state (where everyone and everything really is) and what the
story has *told* so far (which line said it). Questions may only be asked about what was told, and the
line ids that told it are the question's supporting facts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from lm2.data.babi.types import Question, Statement, Story

# --- vocabulary -------------------------------------------------------------------------------------

# qa1-qa3, qa6-qa9, qa11-qa13
PEOPLE = ("Mary", "John", "Daniel", "Sandra")
# qa5 (three-argument relations)
PEOPLE_QA5 = ("Bill", "Fred", "Jeff", "Mary")
# qa10 and qa14
PEOPLE_QA10 = ("Bill", "Fred", "Julie", "Mary")

ROOMS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
# qa10 and qa14 mix a few rooms with places outside
PLACES_QA10 = ("bedroom", "cinema", "kitchen", "office", "park", "school")

OBJECTS = ("apple", "football", "milk")

DIRECTIONS = ("north", "south", "east", "west")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}

# "Mary went back to the kitchen."
MOVE_VERBS = ("moved", "went", "journeyed", "travelled", "went back")
# "Mary got the milk there."
GRAB_VERBS = ("got", "grabbed", "picked up", "took")
# "Mary dropped the milk."
DROP_VERBS = ("dropped", "discarded", "left", "put down")
# "Mary gave the milk to John."
GIVE_VERBS = ("gave", "handed", "passed")

# qa7 answers: how many objects someone carries
NUMBER_WORDS = ("none", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


# --- sentence templates -----------------------------------------------------------------------------


def move_sentence(person: str, room: str, verb: str) -> str:
    return f"{person} {verb} to the {room}."


def grab_sentence(person: str, obj: str, verb: str, there: bool) -> str:
    return f"{person} {verb} the {obj}{' there' if there else ''}."


def drop_sentence(person: str, obj: str, verb: str, there: bool) -> str:
    return f"{person} {verb} the {obj}{' there' if there else ''}."


def give_sentence(giver: str, obj: str, receiver: str, verb: str) -> str:
    return f"{giver} {verb} the {obj} to {receiver}."


def is_in_sentence(person: str, room: str) -> str:
    return f"{person} is in the {room}."


# --- story assembly ---------------------------------------------------------------------------------


@dataclass
class StoryWriter:
    """Numbers the lines of one story as they are written (ids from 1, as in the files)."""

    task: str
    lines: list[Statement | Question] = field(default_factory=list)
    num_questions: int = 0

    def say(self, text: str) -> int:
        """Append a statement and return its line id."""
        self.lines.append(Statement(text=text))
        return len(self.lines)

    def ask(self, text: str, answer: str, supporting: Sequence[int]) -> None:
        """Append a question; ``supporting`` are the ids of the statements that answer it."""
        statements = {i for i, line in enumerate(self.lines, 1) if isinstance(line, Statement)}
        if not supporting or any(s not in statements for s in supporting):
            raise ValueError(
                f"{self.task}: question {text!r} cites {list(supporting)}; supporting ids must be "
                f"ids of earlier statements (lines 1 to {len(self.lines)} that are not questions)"
            )
        self.lines.append(Question(text=text, answer=answer, supporting=tuple(supporting)))
        self.num_questions += 1

    def story(self) -> Story:
        return Story(task=self.task, lines=list(self.lines))


# --- the simulation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Told:
    """A fact the story has stated, with the line that stated it."""

    value: str
    line: int


@dataclass(frozen=True)
class Give:
    giver: str
    obj: str
    receiver: str
    line: int


class World:
    """People who move between rooms and take, drop and hand over objects.

    The true state always exists (a person not yet mentioned is somewhere); the ``told_*`` fields and
    the object records hold what the story has said, with the lines that said it, which is what
    questions may use. Objects start unseen: the first person to take one finds it where they stand.
    Every action checks that it is possible, writes one sentence and returns its line id.
    """

    def __init__(
        self,
        rng: random.Random,
        writer: StoryWriter,
        people: Sequence[str] = PEOPLE,
        rooms: Sequence[str] = ROOMS,
        objects: Sequence[str] = OBJECTS,
    ) -> None:
        self.rng = rng
        self.writer = writer
        self.people = tuple(people)
        self.rooms = tuple(rooms)
        self.objects = tuple(objects)
        # the true state
        self.room_of: dict[str, str] = {p: rng.choice(self.rooms) for p in self.people}
        self.holder: dict[str, str | None] = {o: None for o in self.objects}
        self.object_room: dict[str, str | None] = {o: None for o in self.objects}  # None: unseen
        # what the story has told
        self.told_room: dict[str, Told] = {}  # person -> the line that last said where they went
        self.last_object_line: dict[str, int] = {}  # object -> last take / drop / give of it
        # object -> (room, (object line, room line)): where the story last put it
        self.object_place: dict[str, tuple[str, tuple[int, int]]] = {}
        # object -> [(room, line that told the carrier's room)], each time it changed rooms
        self.object_history: dict[str, list[tuple[str, int]]] = {o: [] for o in self.objects}
        # person -> object -> lines where they took, dropped, gave or received it
        self.touched: dict[str, dict[str, list[int]]] = {}
        self.gives: list[Give] = []

    def carried_by(self, person: str) -> list[str]:
        """Objects ``person`` holds, in the order they first touched them."""
        return [o for o in self.touched.get(person, {}) if self.holder[o] == person]

    def free_objects(self) -> list[str]:
        return [o for o in self.objects if self.holder[o] is None]

    # -- actions --

    def move(self, person: str, room: str | None = None, verb: str | None = None) -> int:
        """``person`` goes to ``room`` (a random other room when None) with what they carry."""
        if room is None:
            room = self.rng.choice([r for r in self.rooms if r != self.room_of[person]])
        if room == self.room_of[person]:
            raise ValueError(f"{person} is already in the {room}")
        line = self.writer.say(move_sentence(person, room, verb or self.rng.choice(MOVE_VERBS)))
        self.room_of[person] = room
        self.told_room[person] = Told(room, line)
        for obj in self.carried_by(person):
            self.object_room[obj] = room
            self.object_place[obj] = (room, (self.last_object_line[obj], line))
            self._note_room(obj, room, line)
        return line

    def can_grab(self, person: str, obj: str) -> bool:
        if self.holder[obj] is not None:
            return False
        return self.object_room[obj] in (None, self.room_of[person])

    def grab(self, person: str, obj: str, there: bool = True, verb: str | None = None) -> int:
        if not self.can_grab(person, obj):
            raise ValueError(f"{person} cannot take the {obj}: it is not lying in their room")
        verb = verb or self.rng.choice(GRAB_VERBS)
        line = self.writer.say(grab_sentence(person, obj, verb, there))
        self.holder[obj] = person
        self.object_room[obj] = self.room_of[person]
        self._touch(person, obj, line)
        self._place(obj, person, line)
        told = self.told_room.get(person)
        if told is not None:
            self._note_room(obj, told.value, told.line)
        return line

    def drop(self, person: str, obj: str, there: bool = False, verb: str | None = None) -> int:
        if self.holder[obj] != person:
            raise ValueError(f"{person} cannot drop the {obj}: they do not hold it")
        verb = verb or self.rng.choice(DROP_VERBS)
        line = self.writer.say(drop_sentence(person, obj, verb, there))
        self.holder[obj] = None
        self._touch(person, obj, line)
        self._place(obj, person, line)
        return line

    def can_give(self, giver: str, obj: str, receiver: str) -> bool:
        return (
            giver != receiver and self.holder[obj] == giver and self.room_of[giver] == self.room_of[receiver]
        )

    def give(self, giver: str, obj: str, receiver: str, verb: str | None = None) -> int:
        if not self.can_give(giver, obj, receiver):
            raise ValueError(f"{giver} cannot give the {obj} to {receiver}: not theirs or not together")
        line = self.writer.say(give_sentence(giver, obj, receiver, verb or self.rng.choice(GIVE_VERBS)))
        self.holder[obj] = receiver
        self._touch(giver, obj, line)
        self._touch(receiver, obj, line)
        self.gives.append(Give(giver, obj, receiver, line))
        return line

    # -- bookkeeping of what was told --

    def _touch(self, person: str, obj: str, line: int) -> None:
        self.touched.setdefault(person, {}).setdefault(obj, []).append(line)
        self.last_object_line[obj] = line

    def _place(self, obj: str, person: str, line: int) -> None:
        told = self.told_room.get(person)
        if told is None:
            self.object_place.pop(obj, None)
        else:
            self.object_place[obj] = (told.value, (line, told.line))

    def _note_room(self, obj: str, room: str, line: int) -> None:
        history = self.object_history[obj]
        if not history or history[-1][0] != room:
            history.append((room, line))
