"""Story generators for bAbI qa1-qa10.

Each generator simulates a small world, writes what happens as numbered statements, and now and then asks
a question whose answer and supporting facts come from what the story has told. How often it asks, how
often it repeats the previous question, and the mix of actions were fitted to the original training files
(see docs/babi-generator.md for the measured comparison).

``GENERATORS`` maps a task name to ``fn(rng) -> Story``; ``lm2.data.babi.generator`` looks tasks up there.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from lm2.data.babi.types import Story
from lm2.data.babi.world import (
    DIRECTIONS,
    MOVE_VERBS,
    NUMBER_WORDS,
    OPPOSITE,
    PEOPLE,
    PEOPLE_QA5,
    PEOPLE_QA10,
    PLACES_QA10,
    ROOMS,
    StoryWriter,
    World,
    is_in_sentence,
    move_sentence,
)

# A story that has not reached its questions after this many lines means a generator bug, not bad luck.
MAX_LINES = 2000


@dataclass(frozen=True)
class Ask:
    """A question the story can answer now."""

    text: str
    answer: str
    supporting: tuple[int, ...]
    weight: float = 1.0  # relative chance of being picked among the candidates


@dataclass(frozen=True)
class Pacing:
    """When questions come. After every ``statements`` statements the story may ask one question: right
    after a question, that question again (``repeat``); else one about the statements just made
    (``fresh``); else one about anything told so far (``stale``), each with the given chance when such
    a question exists. The story's first question comes with chance ``first`` (when given) instead."""

    repeat: float
    fresh: float
    stale: float
    first: float | None = None
    statements: int = 2
    questions: int = 5


def _pick(rng: random.Random, asks: list[Ask]) -> Ask:
    return rng.choices(asks, weights=[a.weight for a in asks])[0]


def tell(
    rng: random.Random,
    writer: StoryWriter,
    act: Callable[[], object],
    questions: Callable[[], list[Ask]],
    pacing: Pacing,
) -> Story:
    """Alternate ``act`` (one statement per call) and questions until the story has its questions."""
    previous: str | None = None
    while writer.num_questions < pacing.questions:
        if len(writer.lines) > MAX_LINES:
            raise RuntimeError(f"{writer.task}: no question possible after {MAX_LINES} lines")
        before = len(writer.lines)
        for _ in range(pacing.statements):
            act()
        asks = questions()
        again = [a for a in asks if a.text == previous]
        previous = None
        fresh = [a for a in asks if max(a.supporting) > before]
        opening = writer.num_questions == 0 and pacing.first is not None
        if again and rng.random() < pacing.repeat:
            ask = again[0]
        elif fresh and rng.random() < (pacing.first if opening else pacing.fresh):
            ask = _pick(rng, fresh)
        elif asks and rng.random() < (pacing.first if opening else pacing.stale):
            ask = _pick(rng, asks)
        else:
            continue
        writer.ask(ask.text, ask.answer, ask.supporting)
        previous = ask.text
    return writer.story()


# --- people carrying objects (qa2, qa3, qa5, qa6, qa7, qa8) -----------------------------------------


@dataclass(frozen=True)
class Actions:
    """Relative weights of the kinds of action, and how often "there" ends a take or a drop."""

    move: float
    grab: float
    drop: float
    give: float = 0.0
    grab_there: float = 1.0
    drop_there: float = 0.2
    meet: float = 0.0  # chance that a move takes someone to a person who carries something


# Fitted to the original training files (scripts/compare_babi.py measures the fit).
PACING: dict[str, Pacing] = {
    "qa1": Pacing(repeat=0.2, fresh=0.65, stale=1.0),
    "qa2": Pacing(repeat=0.5, fresh=0.55, stale=0.05),
    "qa3": Pacing(repeat=0.42, fresh=0.16, stale=0.02),
    "qa5": Pacing(repeat=0.1, fresh=0.75, stale=0.85, first=0.3),
    "qa6": Pacing(repeat=0.08, fresh=0.72, stale=1.0),
    "qa7": Pacing(repeat=0.4, fresh=0.8, stale=0.95, first=0.7),
    "qa8": Pacing(repeat=0.4, fresh=0.8, stale=0.95, first=0.7),
    "qa9": Pacing(repeat=0.06, fresh=0.78, stale=1.0),
    "qa10": Pacing(repeat=0.04, fresh=0.77, stale=1.0),
}
ACTIONS: dict[str, Actions] = {
    "qa2": Actions(move=0.55, grab=0.23, drop=0.22),
    "qa3": Actions(move=0.55, grab=0.25, drop=0.2, grab_there=0.19, drop_there=0.21),
    "qa5": Actions(move=0.5, grab=0.2, drop=0.16, give=0.6, drop_there=0.17, meet=0.2),
    "qa6": Actions(move=0.62, grab=0.2, drop=0.18),
    "qa7": Actions(move=0.55, grab=0.18, drop=0.22, give=0.35, drop_there=0.23, meet=0.3),
    "qa8": Actions(move=0.6, grab=0.2, drop=0.2, drop_there=0.15),
}


def act_with_objects(world: World, actions: Actions) -> None:
    """One random possible action, its kind drawn by ``actions``' weights among the possible kinds."""
    rng = world.rng
    held = [(h, o) for o in world.objects if (h := world.holder[o]) is not None]
    grabs = [(p, o) for p in world.people for o in world.objects if world.can_grab(p, o)]
    gives = [(g, o, r) for g, o in held for r in world.people if world.can_give(g, o, r)]
    kinds, weights = ["move"], [actions.move]
    for kind, options, weight in (
        ("grab", grabs, actions.grab),
        ("drop", held, actions.drop),
        ("give", gives, actions.give),
    ):
        if options and weight > 0:
            kinds.append(kind)
            weights.append(weight)
    kind = rng.choices(kinds, weights=weights)[0]
    if kind == "move":
        person = rng.choice(world.people)
        carriers = {world.room_of[h] for h, _ in held if h != person}
        carriers.discard(world.room_of[person])
        if carriers and rng.random() < actions.meet:
            world.move(person, rng.choice(sorted(carriers)))
        else:
            world.move(person)
    elif kind == "grab":
        world.grab(*rng.choice(grabs), there=rng.random() < actions.grab_there)
    elif kind == "drop":
        world.drop(*rng.choice(held), there=rng.random() < actions.drop_there)
    else:
        world.give(*rng.choice(gives))


def _object_story(
    task: str,
    rng: random.Random,
    actions: Actions,
    questions: Callable[[World], list[Ask]],
    pacing: Pacing,
    people: tuple[str, ...] = PEOPLE,
) -> Story:
    writer = StoryWriter(task)
    world = World(rng, writer, people=people)
    return tell(rng, writer, lambda: act_with_objects(world, actions), lambda: questions(world), pacing)


# --- qa1: where is a person --------------------------------------------------------------------------


def _where_is_person(world: World) -> list[Ask]:
    return [Ask(f"Where is {p}?", t.value, (t.line,)) for p, t in world.told_room.items()]


def qa1(rng: random.Random) -> Story:
    writer = StoryWriter("qa1")
    world = World(rng, writer, objects=())
    return tell(
        rng,
        writer,
        lambda: world.move(rng.choice(world.people)),
        lambda: _where_is_person(world),
        PACING["qa1"],
    )


# --- qa2: where is an object -------------------------------------------------------------------------


def _where_is_object(world: World) -> list[Ask]:
    return [Ask(f"Where is the {o}?", room, lines) for o, (room, lines) in world.object_place.items()]


def qa2(rng: random.Random) -> Story:
    return _object_story(
        "qa2",
        rng,
        ACTIONS["qa2"],
        _where_is_object,
        PACING["qa2"],
    )


# --- qa3: where was an object before a place ---------------------------------------------------------


def _where_was_object(world: World) -> list[Ask]:
    asks = []
    for obj, history in world.object_history.items():
        seen: set[str] = set()
        # walk back from the latest room; each room is asked about at its latest visit
        for i in range(len(history) - 1, 0, -1):
            if len(seen) == len(world.rooms):
                break
            room, line = history[i]
            if room in seen:
                continue
            seen.add(room)
            before, before_line = history[i - 1]
            asks.append(
                Ask(
                    f"Where was the {obj} before the {room}?",
                    before,
                    (world.last_object_line[obj], line, before_line),
                    weight=1.0 if i == len(history) - 1 else 0.1,
                )
            )
    return asks


def qa3(rng: random.Random) -> Story:
    return _object_story(
        "qa3",
        rng,
        ACTIONS["qa3"],
        _where_was_object,
        PACING["qa3"],
    )


# --- qa4: two-argument relations ---------------------------------------------------------------------


def qa4(rng: random.Random) -> Story:
    """Three rooms in a row; two statements tie the middle one to each end; one question."""
    a, middle, b = rng.sample(ROOMS, 3)
    direction = rng.choice(DIRECTIONS)  # a lies `direction` of the middle, b the opposite way
    writer = StoryWriter("qa4")
    facts = []
    for end, d in ((a, direction), (b, OPPOSITE[direction])):
        if rng.random() < 0.645:
            facts.append((end, d, middle))  # "The <end> is <d> of the <middle>."
        else:
            facts.append((middle, OPPOSITE[d], end))
    for x, d, y in facts:
        writer.say(f"The {x} is {d} of the {y}.")
    line = rng.randrange(2)
    x, d, y = facts[line]
    if rng.random() < 0.48:
        writer.ask(f"What is {d} of the {y}?", x, (line + 1,))
    else:
        writer.ask(f"What is the {y} {OPPOSITE[d]} of?", x, (line + 1,))
    return writer.story()


# --- qa5: three-argument relations -------------------------------------------------------------------


def _who_gave_what(world: World) -> list[Ask]:
    # one question per (form, key), about the latest matching hand-over
    latest: dict[tuple[str, ...], tuple[str, str, int]] = {}
    for g in world.gives:
        o, giver, receiver, line = g.obj, g.giver, g.receiver, g.line
        latest[("what", giver, receiver)] = (f"What did {giver} give to {receiver}?", o, line)
        latest[("received", o)] = (f"Who received the {o}?", receiver, line)
        latest[("gave", o)] = (f"Who gave the {o}?", giver, line)
        latest[("give to", giver, o)] = (f"Who did {giver} give the {o} to?", receiver, line)
        latest[("gave to", o, receiver)] = (f"Who gave the {o} to {receiver}?", giver, line)
    share = {"what": 0.37, "received": 0.17, "gave": 0.17, "give to": 0.16, "gave to": 0.13}
    return [Ask(text, answer, (line,), weight=share[key[0]]) for key, (text, answer, line) in latest.items()]


def qa5(rng: random.Random) -> Story:
    return _object_story(
        "qa5",
        rng,
        ACTIONS["qa5"],
        _who_gave_what,
        PACING["qa5"],
        people=PEOPLE_QA5,
    )


# --- qa6: yes/no questions ---------------------------------------------------------------------------


def _is_person_in(world: World) -> list[Ask]:
    asks = []
    for person, told in world.told_room.items():
        other = world.rng.choice([r for r in world.rooms if r != told.value])
        asks.append(Ask(f"Is {person} in the {told.value}?", "yes", (told.line,)))
        asks.append(Ask(f"Is {person} in the {other}?", "no", (told.line,)))
    return asks


def qa6(rng: random.Random) -> Story:
    return _object_story(
        "qa6",
        rng,
        ACTIONS["qa6"],
        _is_person_in,
        PACING["qa6"],
    )


# --- qa7 / qa8: counting and listing what someone carries --------------------------------------------


def _how_many(world: World) -> list[Ask]:
    return [
        Ask(
            f"How many objects is {person} carrying?",
            NUMBER_WORDS[len(world.carried_by(person))],
            tuple(sorted(line for lines in touched.values() for line in lines)),
        )
        for person, touched in world.touched.items()
    ]


def _what_carrying(world: World) -> list[Ask]:
    # the original lists objects, and cites lines, object by object in the order first touched
    return [
        Ask(
            f"What is {person} carrying?",
            ",".join(world.carried_by(person)) or "nothing",
            tuple(line for lines in touched.values() for line in lines),
        )
        for person, touched in world.touched.items()
    ]


def qa7(rng: random.Random) -> Story:
    return _object_story(
        "qa7",
        rng,
        ACTIONS["qa7"],
        _how_many,
        PACING["qa7"],
    )


def qa8(rng: random.Random) -> Story:
    return _object_story(
        "qa8",
        rng,
        ACTIONS["qa8"],
        _what_carrying,
        PACING["qa8"],
    )


# --- qa9 / qa10: negation and indefinite knowledge ---------------------------------------------------


class _Whereabouts:
    """People whose whereabouts the story states outright, denies, or narrows to two places."""

    def __init__(
        self, rng: random.Random, task: str, people: tuple[str, ...], rooms: tuple[str, ...]
    ) -> None:
        self.rng = rng
        self.rooms = rooms
        self.people = people
        self.writer = StoryWriter(task)
        self.room_of = {p: rng.choice(rooms) for p in people}  # the truth
        # person -> ("at" | "not" | "either", rooms, line): the last thing said about them
        self.told: dict[str, tuple[str, tuple[str, ...], int]] = {}

    def _elsewhere(self, person: str) -> str:
        return self.rng.choice([r for r in self.rooms if r != self.room_of[person]])

    def move(self, person: str) -> None:
        room = self._elsewhere(person)
        line = self.writer.say(move_sentence(person, room, self.rng.choice(MOVE_VERBS)))
        self.room_of[person] = room
        self.told[person] = ("at", (room,), line)

    def is_in(self, person: str) -> None:
        room = self.rng.choice(self.rooms)
        line = self.writer.say(is_in_sentence(person, room))
        self.room_of[person] = room
        self.told[person] = ("at", (room,), line)

    def not_in(self, person: str, no_longer: bool) -> None:
        if no_longer:  # they were there and left for somewhere unsaid
            room = self.room_of[person]
            self.room_of[person] = self._elsewhere(person)
            line = self.writer.say(f"{person} is no longer in the {room}.")
        else:
            room = self._elsewhere(person)
            line = self.writer.say(f"{person} is not in the {room}.")
        self.told[person] = ("not", (room,), line)

    def either(self, person: str) -> None:
        a, b = self.rng.sample(self.rooms, 2)
        self.room_of[person] = self.rng.choice((a, b))
        line = self.writer.say(f"{person} is either in the {a} or the {b}.")
        self.told[person] = ("either", (a, b), line)

    def questions(self, weights: dict[str, float]) -> list[Ask]:
        """Every determined "Is X in the Y?", weighted by its answer."""
        asks = []
        for person, (kind, rooms, line) in self.told.items():
            if kind == "not":
                asks.append(Ask(f"Is {person} in the {rooms[0]}?", "no", (line,), weights["no"]))
                continue
            for room in self.rooms:
                if kind == "at":
                    answer = "yes" if room == rooms[0] else "no"
                else:
                    answer = "maybe" if room in rooms else "no"
                # spread each answer's weight over the rooms that give it
                n = {"yes": 1, "maybe": len(rooms), "no": len(self.rooms) - len(rooms)}[answer]
                asks.append(Ask(f"Is {person} in the {room}?", answer, (line,), weights[answer] / n))
        return asks


def qa9(rng: random.Random) -> Story:
    w = _Whereabouts(rng, "qa9", PEOPLE, ROOMS)

    def act() -> None:
        person = rng.choice(w.people)
        kind = rng.choices(("move", "is", "not", "no longer"), weights=(0.49, 0.24, 0.13, 0.14))[0]
        if kind == "move":
            w.move(person)
        elif kind == "is":
            w.is_in(person)
        else:
            w.not_in(person, no_longer=kind == "no longer")

    weights = {"yes": 0.85, "no": 1.0}
    return tell(rng, w.writer, act, lambda: w.questions(weights), PACING["qa9"])


def qa10(rng: random.Random) -> Story:
    w = _Whereabouts(rng, "qa10", PEOPLE_QA10, PLACES_QA10)

    def act() -> None:
        person = rng.choice(w.people)
        kind = rng.choices(("move", "is", "either"), weights=(0.5, 0.26, 0.24))[0]
        if kind == "move":
            w.move(person)
        elif kind == "is":
            w.is_in(person)
        else:
            w.either(person)

    weights = {"yes": 1.15, "no": 1.0, "maybe": 0.9}
    return tell(rng, w.writer, act, lambda: w.questions(weights), PACING["qa10"])


GENERATORS: dict[str, Callable[[random.Random], Story]] = {
    "qa1": qa1,
    "qa2": qa2,
    "qa3": qa3,
    "qa4": qa4,
    "qa5": qa5,
    "qa6": qa6,
    "qa7": qa7,
    "qa8": qa8,
    "qa9": qa9,
    "qa10": qa10,
}
