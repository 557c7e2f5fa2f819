"""An independent solver for bAbI qa1-qa10, used to check both the real files and the generator.

It reads nothing but the text of a story's lines (statements and questions), parses every sentence with
its own patterns, tracks what the story has said, and computes each question's answer and supporting-fact
ids. It shares no code with ``lm2.data.babi`` on purpose: a bug in the generator's world model cannot hide
behind the same bug here. Questions whose answer the story does not determine raise ``Undetermined``.

The conventions (which facts count as support, in which order) were read off the original training files;
``test_solver_agrees_with_real_files`` holds the solver to them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

NUMBERS = ("none", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
INVERSE = {"north": "south", "south": "north", "east": "west", "west": "east"}

_W = r"([A-Za-z]+)"
MOVE = re.compile(rf"^{_W} (?:moved|went|journeyed|travelled|went back) to the {_W}\.$")
IS_IN = re.compile(rf"^{_W} is in the {_W}\.$")
NOT_IN = re.compile(rf"^{_W} is (?:not|no longer) in the {_W}\.$")
EITHER = re.compile(rf"^{_W} is either in the {_W} or the {_W}\.$")
TAKE = re.compile(rf"^{_W} (?:got|grabbed|took|picked up) the {_W}(?: there)?\.$")
DROP = re.compile(rf"^{_W} (?:dropped|discarded|left|put down) the {_W}(?: there)?\.$")
GIVE = re.compile(rf"^{_W} (?:gave|handed|passed) the {_W} to {_W}\.$")
RELATION = re.compile(rf"^The {_W} is (north|south|east|west) of the {_W}\.$")

Q_WHERE_PERSON = re.compile(r"^Where is ([A-Z][a-z]+)\?$")
Q_WHERE_OBJECT = re.compile(rf"^Where is the {_W}\?$")
Q_WHERE_BEFORE = re.compile(rf"^Where was the {_W} before the {_W}\?$")
Q_WHAT_IS_DIR_OF = re.compile(rf"^What is (north|south|east|west) of the {_W}\?$")
Q_WHAT_IS_X_DIR_OF = re.compile(rf"^What is the {_W} (north|south|east|west) of\?$")
Q_WHAT_GIVE = re.compile(rf"^What did {_W} give to {_W}\?$")
Q_WHO_RECEIVED = re.compile(rf"^Who received the {_W}\?$")
Q_WHO_GAVE = re.compile(rf"^Who gave the {_W}\?$")
Q_WHO_GIVE_TO = re.compile(rf"^Who did {_W} give the {_W} to\?$")
Q_WHO_GAVE_TO = re.compile(rf"^Who gave the {_W} to {_W}\?$")
Q_IS_IN = re.compile(rf"^Is {_W} in the {_W}\?$")
Q_HOW_MANY = re.compile(rf"^How many objects is {_W} carrying\?$")
Q_WHAT_CARRY = re.compile(rf"^What is {_W} carrying\?$")


class Undetermined(Exception):
    """The story does not determine the question's answer."""


class Unparsed(Exception):
    """A line matches none of the sentence patterns of qa1-qa10."""


@dataclass
class _State:
    # person -> ("at" | "not" | "either", rooms, line): the last thing said about where they are
    place: dict[str, tuple[str, tuple[str, ...], int]] = field(default_factory=dict)
    # object -> person holding it (absent: on the floor or never seen)
    holder: dict[str, str] = field(default_factory=dict)
    # person -> objects held, in the order received
    carrying: dict[str, list[str]] = field(default_factory=dict)
    # person -> object -> lines of every take / drop / give of it they took part in, objects in the
    # order the person first touched them
    object_lines: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    # object -> the last line that took, dropped or handed it over
    last_object_line: dict[str, int] = field(default_factory=dict)
    # object -> (room, supporting lines) where the story last puts it
    object_place: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    # object -> [(room, line that told the carrier's room)] as the object changed rooms
    object_rooms: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    # (giver, object, receiver, line) in story order
    gives: list[tuple[str, str, str, int]] = field(default_factory=list)
    # (a, direction, b, line): "the a is <direction> of the b", both ways round
    relations: list[tuple[str, str, str, int]] = field(default_factory=list)

    def room_of(self, person: str) -> tuple[str, int] | None:
        told = self.place.get(person)
        if told is None or told[0] != "at":
            return None
        return told[1][0], told[2]


def _statement(state: _State, text: str, line: int) -> None:
    if m := MOVE.match(text) or IS_IN.match(text):
        person, room = m.groups()
        state.place[person] = ("at", (room,), line)
        for obj in state.carrying.get(person, []):
            state.object_place[obj] = (room, (state.last_object_line[obj], line))
            rooms = state.object_rooms.setdefault(obj, [])
            if not rooms or rooms[-1][0] != room:
                rooms.append((room, line))
    elif m := NOT_IN.match(text):
        person, room = m.groups()
        state.place[person] = ("not", (room,), line)
    elif m := EITHER.match(text):
        person, a, b = m.groups()
        state.place[person] = ("either", (a, b), line)
    elif m := TAKE.match(text):
        person, obj = m.groups()
        if obj in state.holder:
            raise Unparsed(f"line {line}: {person} takes the {obj}, which {state.holder[obj]} holds")
        state.holder[obj] = person
        state.carrying.setdefault(person, []).append(obj)
        _touch(state, person, obj, line)
        _place_object(state, obj, person, line, moves_it=True)
    elif m := DROP.match(text):
        person, obj = m.groups()
        if state.holder.get(obj) != person:
            raise Unparsed(f"line {line}: {person} drops the {obj} without holding it")
        del state.holder[obj]
        state.carrying[person].remove(obj)
        _touch(state, person, obj, line)
        _place_object(state, obj, person, line, moves_it=False)
    elif m := GIVE.match(text):
        giver, obj, receiver = m.groups()
        if state.holder.get(obj) != giver:
            raise Unparsed(f"line {line}: {giver} gives the {obj} without holding it")
        state.holder[obj] = receiver
        state.carrying[giver].remove(obj)
        state.carrying.setdefault(receiver, []).append(obj)
        _touch(state, giver, obj, line)
        _touch(state, receiver, obj, line)
        state.gives.append((giver, obj, receiver, line))
    elif m := RELATION.match(text):
        a, direction, b = m.groups()
        state.relations.append((a, direction, b, line))
        state.relations.append((b, INVERSE[direction], a, line))
    else:
        raise Unparsed(f"line {line}: no qa1-qa10 pattern matches {text!r}")


def _touch(state: _State, person: str, obj: str, line: int) -> None:
    state.object_lines.setdefault(person, {}).setdefault(obj, []).append(line)
    state.last_object_line[obj] = line


def _place_object(state: _State, obj: str, person: str, line: int, moves_it: bool) -> None:
    """After a take or a drop: the object is where the person is, if the story said where that is."""
    told = state.room_of(person)
    if told is None:
        state.object_place.pop(obj, None)
        return
    room, room_line = told
    state.object_place[obj] = (room, (line, room_line))
    rooms = state.object_rooms.setdefault(obj, [])
    if moves_it and (not rooms or rooms[-1][0] != room):
        rooms.append((room, room_line))


def _only(candidates: set[str], what: str) -> str:
    if len(candidates) != 1:
        raise Undetermined(f"{what}: candidates {sorted(candidates)}")
    return next(iter(candidates))


def _question(state: _State, text: str) -> tuple[str, tuple[int, ...]]:
    if m := Q_WHERE_PERSON.match(text):
        told = state.room_of(m.group(1))
        if told is None:
            raise Undetermined(f"{text}: the story never says where {m.group(1)} is")
        return told[0], (told[1],)
    if m := Q_WHERE_OBJECT.match(text):
        obj = m.group(1)
        if obj not in state.object_place:
            raise Undetermined(f"{text}: the story does not place the {obj}")
        room, lines = state.object_place[obj]
        return room, lines
    if m := Q_WHERE_BEFORE.match(text):
        obj, room = m.groups()
        rooms = state.object_rooms.get(obj, [])
        last = max((i for i, (r, _) in enumerate(rooms) if r == room), default=None)
        if last is None or last == 0:
            raise Undetermined(f"{text}: the story never moves the {obj} into the {room}")
        before, before_line = rooms[last - 1]
        return before, (state.last_object_line[obj], rooms[last][1], before_line)
    if m := Q_WHAT_IS_DIR_OF.match(text):
        direction, b = m.groups()
        found = {(x, ln) for x, d, y, ln in state.relations if d == direction and y == b}
        answer = _only({x for x, _ in found}, text)
        return answer, tuple(sorted({ln for x, ln in found}))
    if m := Q_WHAT_IS_X_DIR_OF.match(text):
        a, direction = m.groups()
        found = {(y, ln) for x, d, y, ln in state.relations if d == direction and x == a}
        answer = _only({y for y, _ in found}, text)
        return answer, tuple(sorted({ln for y, ln in found}))
    give_match = (
        (Q_WHAT_GIVE, lambda g, giver, recv: (g[0], g[2]) == (giver, recv), 1),
        (Q_WHO_RECEIVED, lambda g, obj: g[1] == obj, 2),
        (Q_WHO_GAVE, lambda g, obj: g[1] == obj, 0),
        (Q_WHO_GIVE_TO, lambda g, giver, obj: (g[0], g[1]) == (giver, obj), 2),
        (Q_WHO_GAVE_TO, lambda g, obj, recv: (g[1], g[2]) == (obj, recv), 0),
    )
    for pattern, matches, slot in give_match:
        if m := pattern.match(text):
            found = [g for g in state.gives if matches(g, *m.groups())]
            if not found:
                raise Undetermined(f"{text}: no such hand-over in the story")
            # the question is about the latest such hand-over, as in the original files
            return found[-1][slot], (found[-1][3],)
    if m := Q_IS_IN.match(text):
        person, room = m.groups()
        if person not in state.place:
            raise Undetermined(f"{text}: the story never says where {person} is")
        kind, rooms, line = state.place[person]
        if kind == "at":
            return ("yes" if rooms[0] == room else "no"), (line,)
        if kind == "not":
            if rooms[0] != room:
                raise Undetermined(f"{text}: only told {person} is not in the {rooms[0]}")
            return "no", (line,)
        return ("maybe" if room in rooms else "no"), (line,)
    if m := Q_HOW_MANY.match(text) or Q_WHAT_CARRY.match(text):
        person = m.group(1)
        touched = state.object_lines.get(person, {})
        if not touched:
            # the original files only ask about someone who has handled an object
            raise Undetermined(f"{text}: {person} has not touched an object")
        held = state.carrying.get(person, [])
        if text.startswith("How many"):
            # qa7 cites the lines in story order
            return NUMBERS[len(held)], tuple(sorted(ln for lns in touched.values() for ln in lns))
        # qa8 lists objects, and cites lines, object by object in the order the person first touched them
        held = [obj for obj in touched if obj in held]
        lines = tuple(ln for lns in touched.values() for ln in lns)
        return (",".join(held) if held else "nothing"), lines
    raise Unparsed(f"no qa1-qa10 question pattern matches {text!r}")


def solve(lines: Sequence[str]) -> list[tuple[str, tuple[int, ...]]]:
    """Answer and supporting line ids (1-based) of every question in a story given as its line texts.

    A line is a question when it ends with "?". Raises ``Undetermined`` for a question the story does not
    answer and ``Unparsed`` for a line outside the qa1-qa10 language.
    """
    state = _State()
    out: list[tuple[str, tuple[int, ...]]] = []
    for line_id, text in enumerate(lines, start=1):
        text = text.strip()
        if text.endswith("?"):
            out.append(_question(state, text))
        else:
            _statement(state, text, line_id)
    return out
