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

    def say(self, text: str) -> int:
        """Append a statement and return its line id."""
        self.lines.append(Statement(text=text))
        return len(self.lines)

    def ask(self, text: str, answer: str, supporting: Sequence[int]) -> None:
        next_id = len(self.lines) + 1
        bad = [s for s in supporting if not (1 <= s < next_id)]
        if bad or not supporting:
            raise ValueError(f"{self.task}: question {text!r} has bad supporting ids {list(supporting)}")
        if isinstance(self.lines[supporting[0] - 1], Question):
            raise ValueError(f"{self.task}: question {text!r} cites a question as support")
        self.lines.append(Question(text=text, answer=answer, supporting=tuple(supporting)))

    @property
    def num_questions(self) -> int:
        return sum(isinstance(line, Question) for line in self.lines)

    def story(self) -> Story:
        return Story(task=self.task, lines=list(self.lines))


# --- the simulation ---------------------------------------------------------------------------------


@dataclass
class Told:
    """A fact the story has stated, with the line that stated it."""

    value: str
    line: int


class World:
    """People who move between rooms and pick up, drop and hand over objects.

    The true state always exists (a person not yet mentioned is somewhere); ``told_*`` hold what the
    story has said. Objects start unseen: the first person to take one finds it where they stand.
    Every action method checks that it is possible, writes one sentence and returns its line id.
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
        self.room_of: dict[str, str] = {p: rng.choice(self.rooms) for p in self.people}
        self.holder: dict[str, str | None] = {o: None for o in self.objects}
        self.object_room: dict[str, str | None] = {o: None for o in self.objects}  # None: unseen
        self.told_room: dict[str, Told] = {}  # person -> last stated room
        # object -> the line of the last statement about it (take, drop, give)
        self.told_object: dict[str, Told] = {}
        # object -> rooms it was told to be in, in order, each with the lines that tell it
        self.object_history: dict[str, list[tuple[str, tuple[int, ...]]]] = {o: [] for o in self.objects}

    # -- what the story has told --

    def carried_by(self, person: str) -> list[str]:
        """Objects ``person`` holds, in the order they were taken."""
        return [o for o in self._take_order if self.holder[o] == person]

    @property
    def _take_order(self) -> list[str]:
        return sorted(
            (o for o in self.objects if o in self.told_object),
            key=lambda o: self.told_object[o].line,
        )

    def told_object_room(self, obj: str) -> tuple[str, tuple[int, ...]] | None:
        """Where the story says ``obj`` is now, and the lines that say so (object line first)."""
        history = self.object_history[obj]
        if not history:
            return None
        room, _ = history[-1]
        holder = self.holder[obj]
        if holder is not None:
            told = self.told_room.get(holder)
            if told is None or told.value != room:
                return None
            return room, (self.told_object[obj].line, told.line)
        return history[-1]

    # -- actions --

    def move(self, person: str, verb: str | None = None) -> int:
        room = self.rng.choice([r for r in self.rooms if r != self.room_of[person]])
        return self.move_to(person, room, verb)

    def move_to(self, person: str, room: str, verb: str | None = None) -> int:
        if room == self.room_of[person]:
            raise ValueError(f"{person} is already in the {room}")
        verb = verb or self.rng.choice(MOVE_VERBS)
        line = self.writer.say(move_sentence(person, room, verb))
        self.room_of[person] = room
        self.told_room[person] = Told(room, line)
        for obj in self.objects:
            if self.holder[obj] == person:
                self.object_room[obj] = room
                self.object_history[obj].append((room, (self.told_object[obj].line, line)))
        return line

    def can_grab(self, person: str, obj: str) -> bool:
        if self.holder[obj] is not None:
            return False
        return self.object_room[obj] is None or self.object_room[obj] == self.room_of[person]

    def grab(self, person: str, obj: str, there: bool = True, verb: str | None = None) -> int:
        if not self.can_grab(person, obj):
            raise ValueError(f"{person} cannot take the {obj}: it is not free in the same room")
        verb = verb or self.rng.choice(GRAB_VERBS)
        line = self.writer.say(grab_sentence(person, obj, verb, there))
        self.holder[obj] = person
        self.object_room[obj] = self.room_of[person]
        self.told_object[obj] = Told(person, line)
        told = self.told_room.get(person)
        if told is not None:
            self._note_object_room(obj, told.value, (line, told.line))
        return line

    def drop(self, person: str, obj: str, there: bool = False, verb: str | None = None) -> int:
        if self.holder[obj] != person:
            raise ValueError(f"{person} cannot drop the {obj}: they do not hold it")
        verb = verb or self.rng.choice(DROP_VERBS)
        line = self.writer.say(drop_sentence(person, obj, verb, there))
        self.holder[obj] = None
        self.told_object[obj] = Told(person, line)
        told = self.told_room.get(person)
        if told is not None:
            self._note_object_room(obj, told.value, (line, told.line))
        return line

    def can_give(self, giver: str, obj: str, receiver: str) -> bool:
        return (
            giver != receiver and self.holder[obj] == giver and self.room_of[giver] == self.room_of[receiver]
        )

    def give(self, giver: str, obj: str, receiver: str, verb: str | None = None) -> int:
        if not self.can_give(giver, obj, receiver):
            raise ValueError(f"{giver} cannot give the {obj} to {receiver}")
        verb = verb or self.rng.choice(GIVE_VERBS)
        line = self.writer.say(give_sentence(giver, obj, receiver, verb))
        self.holder[obj] = receiver
        self.told_object[obj] = Told(receiver, line)
        return line

    def _note_object_room(self, obj: str, room: str, lines: tuple[int, ...]) -> None:
        history = self.object_history[obj]
        if history and history[-1][0] == room:
            return
        history.append((room, lines))
