"""An independent solver for bAbI qa11-qa20, used to check the generator and validated on the real files.

It reads nothing but the sentences: every statement is parsed with its own patterns (an unknown sentence
is an error, so a broken template cannot slip through), the solver keeps the state a reader would, and
answers each question with the ids of the statements that support the answer. It shares no code with
``lm2.data.babi.tasks_11_20``; its only world knowledge is what a reader brings (pronoun genders,
plural forms, where a hungry agent goes).

``determined`` says whether the story fixes the answer and its supporting facts uniquely. The original
files contain a few questions that are not (a place visited twice in qa14, two colours for one species in
qa16, several chains of facts in qa18); there the solver follows the files' convention, and a generator
must not ask such questions.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from lm2.data.babi.types import Question, Story


@dataclass(frozen=True)
class Solution:
    answer: str
    supporting: tuple[int, ...]
    determined: bool
    alternatives: tuple[tuple[int, ...], ...] = ()  # other valid supporting lists, where there are some


class UnknownSentence(ValueError):
    pass


def _match(pattern: re.Pattern[str], text: str, task: str) -> re.Match[str]:
    m = pattern.match(text)
    if not m:
        raise UnknownSentence(f"{task}: cannot parse {text!r}")
    return m


_MOVE_VERB = r"(?:moved|went|went back|journeyed|travelled)"
_CONNECTIVE = r"(?:Then|After that|Following that|Afterwards)"

# --- qa11-qa13 --------------------------------------------------------------------------------------

_GENDER = {"Mary": "she", "Sandra": "she", "John": "he", "Daniel": "he"}
_NAMED_MOVE = re.compile(rf"^([A-Z][a-z]+)(?: and ([A-Z][a-z]+))? {_MOVE_VERB} to the ([a-z]+)\.$")
_PRONOUN_MOVE = re.compile(rf"^{_CONNECTIVE} (he|she|they) {_MOVE_VERB} to the ([a-z]+)\.$")
_WHERE_IS = re.compile(r"^Where is ([A-Z][a-z]+)\?$")


def _solve_people(story: Story) -> list[Solution]:
    where: dict[str, tuple[str, tuple[int, ...]]] = {}  # person -> (room, supporting lines)
    last_subject: tuple[tuple[str, ...], int] | None = None
    out = []
    for line_id, line in enumerate(story.lines, start=1):
        text = line.text
        if isinstance(line, Question):
            person = _match(_WHERE_IS, text, story.task).group(1)
            if person in where:
                room, support = where[person]
                out.append(Solution(room, support, True))
            else:
                out.append(Solution("", (), False))
            continue
        m = _NAMED_MOVE.match(text)
        if m:
            people = tuple(p for p in m.group(1, 2) if p)
            for person in people:
                where[person] = (m.group(3), (line_id,))
            last_subject = (people, line_id)
            continue
        pronoun, room = _match(_PRONOUN_MOVE, text, story.task).groups()
        if last_subject is None:
            raise UnknownSentence(f"{story.task}: {text!r} (line {line_id}) has no antecedent")
        people, antecedent = last_subject
        expected = "they" if len(people) > 1 else _GENDER[people[0]]
        if pronoun != expected:
            raise UnknownSentence(f"{story.task}: {pronoun!r} on line {line_id} cannot refer to {people}")
        for person in people:
            where[person] = (room, (antecedent, line_id))
    return out


# --- qa14 -------------------------------------------------------------------------------------------

_WHEN = {"yesterday": 0, "this morning": 1, "this afternoon": 2, "this evening": 3}
_TIME_FRONT = re.compile(
    rf"^(Yesterday|This morning|This afternoon|This evening) ([A-Z][a-z]+) {_MOVE_VERB} to the ([a-z]+)\.$"
)
_TIME_BACK = re.compile(
    rf"^([A-Z][a-z]+) {_MOVE_VERB} to the ([a-z]+) (yesterday|this morning|this afternoon|this evening)\.$"
)
_WHERE_WAS = re.compile(r"^Where was ([A-Z][a-z]+) before the ([a-z]+)\?$")


def _solve_time(story: Story) -> list[Solution]:
    visits: dict[str, dict[int, tuple[str, int]]] = {}  # person -> time -> (place, line)
    out = []
    for line_id, line in enumerate(story.lines, start=1):
        if isinstance(line, Question):
            person, place = _match(_WHERE_WAS, line.text, story.task).groups()
            known = visits.get(person, {})
            at = sorted(t for t, (p, _) in known.items() if p == place)
            earlier = [t for t in at if any(u < t for u in known)]
            if not earlier:
                out.append(Solution("", (), False))
                continue
            t = earlier[-1]  # the files' convention when a place was visited twice: the latest visit
            before = max(u for u in known if u < t)
            determined = len(at) == 1 and before == t - 1
            out.append(Solution(known[before][0], (known[t][1], known[before][1]), determined))
            continue
        m = _TIME_FRONT.match(line.text)
        if m:
            when, person, place = m.group(1).lower(), m.group(2), m.group(3)
        else:
            person, place, when = _match(_TIME_BACK, line.text, story.task).groups()
        slots = visits.setdefault(person, {})
        if _WHEN[when] in slots:
            raise UnknownSentence(f"{story.task}: line {line_id} tells {person}'s {when} a second time")
        slots[_WHEN[when]] = (place, line_id)
    return out


# --- qa15-qa16 --------------------------------------------------------------------------------------

_PLURAL = {"mouse": "mice", "sheep": "sheep", "cat": "cats", "wolf": "wolves"}
_SINGULAR = {v: k for k, v in _PLURAL.items()}
_FEAR = re.compile(r"^([A-Z][a-z]+) are afraid of ([a-z]+)\.$")
_IS_A = re.compile(r"^([A-Z][a-z]+) is an? ([a-z]+)\.$")
_WHAT_AFRAID = re.compile(r"^What is ([a-z]+) afraid of\?$")


def _solve_deduction(story: Story) -> list[Solution]:
    fears: dict[str, tuple[str, int]] = {}  # plural species -> (plural feared, line)
    kind: dict[str, tuple[str, int]] = {}  # lower-case name -> (singular species, line)
    out = []
    for line_id, line in enumerate(story.lines, start=1):
        if isinstance(line, Question):
            name = _match(_WHAT_AFRAID, line.text, story.task).group(1)
            if name not in kind or _PLURAL[kind[name][0]] not in fears:
                out.append(Solution("", (), False))
                continue
            species, member_line = kind[name]
            feared, rule_line = fears[_PLURAL[species]]
            out.append(Solution(_SINGULAR[feared], (member_line, rule_line), True))
            continue
        m = _FEAR.match(line.text)
        if m:
            subject = m.group(1).lower()
            if subject in fears or subject not in _SINGULAR or m.group(2) not in _SINGULAR:
                raise UnknownSentence(f"{story.task}: bad or repeated rule {line.text!r}")
            fears[subject] = (m.group(2), line_id)
            continue
        name, species = _match(_IS_A, line.text, story.task).groups()
        if species not in _PLURAL:
            raise UnknownSentence(f"{story.task}: unknown species in {line.text!r}")
        kind[name.lower()] = (species, line_id)
    return out


_COLOR_IS = re.compile(r"^([A-Z][a-z]+) is (gray|white|yellow|green)\.$")
_WHAT_COLOR = re.compile(r"^What color is ([A-Z][a-z]+)\?$")


def _solve_induction(story: Story) -> list[Solution]:
    species: dict[str, tuple[str, int]] = {}
    color: dict[str, tuple[str, int]] = {}
    out = []
    for line_id, line in enumerate(story.lines, start=1):
        if isinstance(line, Question):
            name = _match(_WHAT_COLOR, line.text, story.task).group(1)
            if name not in species:
                out.append(Solution("", (), False))
                continue
            kin = [n for n in species if n != name and species[n][0] == species[name][0] and n in color]
            if not kin or name in color:
                out.append(Solution(color.get(name, ("", 0))[0], (), name in color))
                continue
            # the files cite the same-species animal introduced last
            witness = max(kin, key=lambda n: species[n][1])
            support = (species[name][1], species[witness][1], color[witness][1])
            determined = len({color[n][0] for n in kin}) == 1
            out.append(Solution(color[witness][0], support, determined))
            continue
        m = _COLOR_IS.match(line.text)
        if m:
            color[m.group(1)] = (m.group(2), line_id)
            continue
        name, kind = _match(_IS_A, line.text, story.task).groups()
        species[name] = (kind, line_id)
    return out


# --- qa17 -------------------------------------------------------------------------------------------

_OFFSET = {"above": (0, 1), "below": (0, -1), "to the left of": (-1, 0), "to the right of": (1, 0)}
_REL = r"(above|below|to the left of|to the right of)"
_PLACED = re.compile(rf"^The ([a-z]+(?: [a-z]+)?) is {_REL} the ([a-z]+(?: [a-z]+)?)\.$")
_IS_REL = re.compile(rf"^Is the ([a-z]+(?: [a-z]+)?) {_REL} the ([a-z]+(?: [a-z]+)?)\?$")


def _solve_positions(story: Story) -> list[Solution]:
    facts: list[tuple[str, str, str, int]] = []  # (subject, relation, object, line)
    out = []
    for line_id, line in enumerate(story.lines, start=1):
        if not isinstance(line, Question):
            a, rel, b = _match(_PLACED, line.text, story.task).groups()
            facts.append((a, rel, b, line_id))
            continue
        a, rel, b = _match(_IS_REL, line.text, story.task).groups()
        # Lay the shapes on a unit grid from the facts (each fact is one step between neighbours).
        pos = {facts[0][0]: (0, 0)} if facts else {}
        changed = True
        while changed:
            changed = False
            for s, r, o, _ in facts:
                dx, dy = _OFFSET[r]
                if s in pos and o not in pos:
                    pos[o] = (pos[s][0] - dx, pos[s][1] - dy)
                    changed = True
                elif o in pos and s not in pos:
                    pos[s] = (pos[o][0] + dx, pos[o][1] + dy)
                    changed = True
        if a not in pos or b not in pos:
            out.append(Solution("", (), False))
            continue
        dx, dy = pos[a][0] - pos[b][0], pos[a][1] - pos[b][1]
        ox, oy = _OFFSET[rel]
        answer = "yes" if ox * dx + oy * dy > 0 else "no"
        about_a = [f[3] for f in facts if a in (f[0], f[2])]
        about_b = [f[3] for f in facts if b in (f[0], f[2])]
        determined = len(about_a) == 1 and len(about_b) == 1 and about_a != about_b
        out.append(Solution(answer, (about_a[0], about_b[0]), determined))
    return out


# --- qa18 -------------------------------------------------------------------------------------------

_THING = r"(chocolate|box of chocolates|box|chest|container|suitcase)"
_FITS = re.compile(rf"^The {_THING} fits inside the {_THING}\.$")
_BIGGER = re.compile(rf"^The {_THING} is bigger than the {_THING}\.$")
_Q_BIGGER = re.compile(rf"^Is the {_THING} bigger than the {_THING}\?$")
_Q_FIT = re.compile(rf"^Does the {_THING} fit in the {_THING}\?$")


def _solve_sizes(story: Story) -> list[Solution]:
    bigger: dict[tuple[str, str], list[int]] = {}  # (big, small) -> the lines that say so
    out = []
    for line_id, line in enumerate(story.lines, start=1):
        text = line.text
        if isinstance(line, Question):
            m = _Q_BIGGER.match(text)
            if m:
                claimed_big, claimed_small = m.groups()
            else:
                claimed_small, claimed_big = _match(_Q_FIT, text, story.task).groups()
            out.append(_size_answer(bigger, claimed_big, claimed_small))
            continue
        m = _FITS.match(text)
        if m:
            small, big = m.groups()
        else:
            big, small = _match(_BIGGER, text, story.task).groups()
        bigger.setdefault((big, small), []).append(line_id)
    return out


def _reaches(bigger: dict[tuple[str, str], list[int]], start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        x = todo.pop()
        for big, small in bigger:
            if big == x and small not in seen:
                seen.add(small)
                todo.append(small)
    return goal in seen


def _size_answer(bigger: dict[tuple[str, str], list[int]], x: str, y: str) -> Solution:
    """Is ``x`` bigger than ``y``? Supported by a two-fact chain, the fact about ``x`` first."""
    yes, no = _reaches(bigger, x, y), _reaches(bigger, y, x)
    if yes == no:  # unrelated, or a contradiction
        return Solution("", (), False)
    top, bottom = (x, y) if yes else (y, x)
    chains = []
    for (big, mid), firsts in bigger.items():
        if big != top:
            continue
        for first in firsts:
            for second in bigger.get((mid, bottom), []):
                chains.append((first, second) if yes else (second, first))
    chains.sort()
    direct = (top, bottom) in bigger
    if not chains:
        return Solution("yes" if yes else "no", (), False)
    return Solution("yes" if yes else "no", chains[0], len(chains) == 1 and not direct, tuple(chains))


# --- qa19 -------------------------------------------------------------------------------------------

_COMPASS = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}
_LIES = re.compile(r"^The ([a-z]+) is (north|south|east|west) of the ([a-z]+)\.$")
_HOW = re.compile(r"^How do you go from the ([a-z]+) to the ([a-z]+)\?$")
_REVERSE = {"n": "s", "s": "n", "e": "w", "w": "e"}


def _solve_paths(story: Story) -> list[Solution]:
    moves: dict[str, list[tuple[str, str, int]]] = {}  # room -> [(direction letter, neighbour, line)]
    out = []
    for line_id, line in enumerate(story.lines, start=1):
        if not isinstance(line, Question):
            a, direction, b = _match(_LIES, line.text, story.task).groups()
            moves.setdefault(b, []).append((direction[0], a, line_id))
            moves.setdefault(a, []).append((_REVERSE[direction[0]], b, line_id))
            continue
        start, goal = _match(_HOW, line.text, story.task).groups()
        # every shortest route, breadth first
        routes: list[list[tuple[str, str, int]]] = []
        frontier: deque[tuple[str, list[tuple[str, str, int]]]] = deque([(start, [])])
        best = None
        while frontier:
            room, path = frontier.popleft()
            if best is not None and len(path) > best:
                break
            if room == goal:
                best = len(path)
                routes.append(path)
                continue
            visited = {start} | {step[1] for step in path}
            for step in moves.get(room, []):
                if step[1] not in visited:
                    frontier.append((step[1], path + [step]))
        if not routes:
            out.append(Solution("", (), False))
            continue
        path = routes[0]
        out.append(Solution(",".join(s[0] for s in path), tuple(s[2] for s in path), len(routes) == 1))
    return out


# --- qa20 -------------------------------------------------------------------------------------------

# what a reader knows: where each need is met, and with what
_GOES = {"hungry": "kitchen", "thirsty": "kitchen", "bored": "garden", "tired": "bedroom"}
_TAKES = {"hungry": "apple", "thirsty": "milk", "bored": "football", "tired": "pajamas"}
_FEELS = re.compile(r"^([A-Z][a-z]+) is (hungry|thirsty|bored|tired)\.$")
_GOES_TO = re.compile(rf"^([A-Z][a-z]+) {_MOVE_VERB} to the ([a-z]+)\.$")
_TAKES_IT = re.compile(r"^([A-Z][a-z]+) (?:got|grabbed|picked up|took) the ([a-z]+) there\.$")
_WHERE_WILL = re.compile(r"^Where will ([a-z]+) go\?$")
_WHY_GO = re.compile(r"^Why did ([a-z]+) go to the ([a-z]+)\?$")
_WHY_GET = re.compile(r"^Why did ([a-z]+) get the ([a-z]+)\?$")


def _solve_motivations(story: Story) -> list[Solution]:
    state: dict[str, tuple[str, int]] = {}  # lower-case name -> (state, line)
    went: dict[str, str] = {}
    took: dict[str, str] = {}
    out = []
    for line_id, line in enumerate(story.lines, start=1):
        text = line.text
        if isinstance(line, Question):
            m = _WHERE_WILL.match(text)
            if m:
                name = m.group(1)
                known = name in state
                out.append(
                    Solution(
                        _GOES[state[name][0]] if known else "", (state[name][1],) if known else (), known
                    )
                )
                continue
            m = _WHY_GO.match(text) or _match(_WHY_GET, text, story.task)
            name, target = m.groups()
            done = went if m.re is _WHY_GO else took
            known = name in state and done.get(name) == target
            out.append(Solution(state[name][0] if known else "", (state[name][1],) if known else (), known))
            continue
        for pattern, store in ((_FEELS, None), (_GOES_TO, went), (_TAKES_IT, took)):
            m = pattern.match(text)
            if m:
                if store is None:
                    state[m.group(1).lower()] = (m.group(2), line_id)
                else:
                    store[m.group(1).lower()] = m.group(2)
                break
        else:
            raise UnknownSentence(f"{story.task}: cannot parse {text!r}")
    return out


SOLVERS = {
    "qa11": _solve_people,
    "qa12": _solve_people,
    "qa13": _solve_people,
    "qa14": _solve_time,
    "qa15": _solve_deduction,
    "qa16": _solve_induction,
    "qa17": _solve_positions,
    "qa18": _solve_sizes,
    "qa19": _solve_paths,
    "qa20": _solve_motivations,
}


def solve(story: Story) -> list[Solution]:
    """One solution per question of ``story``, in order."""
    return SOLVERS[story.task](story)
