"""Generators of the bAbI tasks qa11-qa20 (Weston et al., 2015), one function per task.

Each generator takes a ``random.Random`` and returns one ``Story`` laid out like the original en/ v1.2
training files: the same vocabulary, sentence templates, answer sets, story lengths and questions per
story (measured against the real files in ``docs/babi-generator-11-20.md``). Stories depend only on the
rng, and every question is answered by the story before it: where the original files leave an answer or
a supporting-fact list ambiguous (a place visited twice in qa14, two colours for one species in qa16, a
relation that two chains of facts both derive in qa18), the generator does not ask that question.

Where the original distribution of a choice is not visible from the task's logic (which person a
question is about, how many agents in qa20 pick something up) the weights below were read off the real
files.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from lm2.data.babi.types import Story
from lm2.data.babi.world import (
    DIRECTIONS,
    GRAB_VERBS,
    MOVE_VERBS,
    OPPOSITE,
    PEOPLE,
    PEOPLE_QA10,
    PLACES_QA10,
    ROOMS,
    StoryWriter,
    grab_sentence,
    move_sentence,
)

# --- task-specific vocabulary (read off the original files) -----------------------------------------

PRONOUN = {"Mary": "she", "Sandra": "she", "John": "he", "Daniel": "he"}  # qa11
# qa11 and qa13 open the second sentence of a pair with one of these
CONNECTIVES = ("Then", "After that", "Following that", "Afterwards")
# A question asks about someone named in the last n pairs (qa11, qa13) or statements (qa12), with n drawn
# from these weights; they reproduce how far back the real questions' supporting facts lie.
_QA11_WINDOWS = {2: 0.5, 3: 0.5}
_QA12_WINDOWS = {2: 0.95, 4: 0.05}
_QA13_WINDOWS = {1: 0.7, 2: 0.3}

# qa14: the four times of day, in order
TIMES = ("yesterday", "this morning", "this afternoon", "this evening")

# Statements before qa14's first question (real files: 17.5% / 72% / 10.5%).
_TIME_OPENING_WEIGHTS = {2: 0.175, 4: 0.72, 6: 0.105}

# qa15: species, plural (rules) -> singular (memberships, answers)
FEARFUL_SPECIES = {"mice": "mouse", "sheep": "sheep", "cats": "cat", "wolves": "wolf"}
FEARFUL_NAMES = ("Gertrude", "Winona", "Emily", "Jessica")

# qa16
INDUCTION_NAMES = ("Lily", "Bernhard", "Greg", "Julius", "Brian")
INDUCTION_SPECIES = ("frog", "swan", "lion", "rhino")
COLORS = ("gray", "white", "yellow", "green")
# How many other animals share the species of the one asked about (qa16 real files: 88% / 10.5% / 1.5%).
_SAME_SPECIES_WEIGHTS = {1: 0.88, 3: 0.105, 4: 0.015}
# How often the asked animal's species is told last on purpose (it ends 31% of the real stories).
_ASKED_LAST = 0.2

# qa17
SHAPES = ("triangle", "blue square", "pink rectangle", "red sphere", "red square", "yellow square")
# relation -> the (dx, dy) step from the object of the sentence to its subject
POSITIONS = {"above": (0, 1), "below": (0, -1), "to the left of": (-1, 0), "to the right of": (1, 0)}

# qa18: the two smallest things are always the same; the four containers are ranked anew in each story
SMALL_THINGS = ("chocolate", "box of chocolates")
CONTAINERS = ("box", "chest", "container", "suitcase")

# qa19: compass steps on a grid
STEPS = {"north": (0, 1), "south": (0, -1), "east": (1, 0), "west": (-1, 0)}

# qa20: an agent's state -> where it goes and what it takes there
AGENTS = ("Sumit", "Yann", "Jason", "Antoine")
MOTIVES = {
    "hungry": ("kitchen", "apple"),
    "thirsty": ("kitchen", "milk"),
    "bored": ("garden", "football"),
    "tired": ("bedroom", "pajamas"),
}
# How many of the four agents go on to take something (qa20 real files: 40% / 53% / 7%).
_TAKERS_WEIGHTS = {2: 0.40, 3: 0.53, 4: 0.07}


def _weighted(rng: random.Random, weights: dict[int, float]) -> int:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _someone_recent(rng: random.Random, groups: Sequence[Sequence[str]], windows: dict[int, float]) -> str:
    """Anyone named in the last few ``groups`` (newest last); how many is drawn from ``windows``."""
    window = _weighted(rng, windows)
    return rng.choice(sorted({person for group in groups[-window:] for person in group}))


def _new_room(rng: random.Random, *avoid: str | None) -> str:
    return rng.choice([r for r in ROOMS if r not in avoid])


# --- qa11-qa13: people moving, with pronouns and conjunctions ----------------------------------------


def basic_coreference(rng: random.Random) -> Story:
    """qa11: "Mary went to the hallway. Then she moved to the garden. Where is Mary?" x5."""
    w = StoryWriter("qa11")
    room: dict[str, str] = {}
    told: dict[str, tuple[int, int]] = {}  # person -> the two lines of their latest pair
    actors: list[str] = []
    for _ in range(5):
        person = rng.choice(PEOPLE)
        first_room = _new_room(rng, room.get(person))
        first = w.say(move_sentence(person, first_room, rng.choice(MOVE_VERBS)))
        room[person] = _new_room(rng, first_room)
        verb = rng.choice(MOVE_VERBS)
        second = w.say(f"{rng.choice(CONNECTIVES)} {PRONOUN[person]} {verb} to the {room[person]}.")
        told[person] = (first, second)
        actors.append(person)
        asked = _someone_recent(rng, [[a] for a in actors], _QA11_WINDOWS)
        w.ask(f"Where is {asked}?", room[asked], told[asked])
    return w.story()


def conjunction(rng: random.Random) -> Story:
    """qa12: "Mary and Daniel went to the bathroom." twice, then "Where is Daniel?"; five times."""
    w = StoryWriter("qa12")
    room: dict[str, str] = {}
    told: dict[str, int] = {}
    pairs: list[list[str]] = []
    for _ in range(5):
        for _ in range(2):
            pair = rng.sample(PEOPLE, 2)
            dest = _new_room(rng, room.get(pair[0]), room.get(pair[1]))
            line = w.say(move_sentence(f"{pair[0]} and {pair[1]}", dest, rng.choice(MOVE_VERBS)))
            for person in pair:
                room[person], told[person] = dest, line
            pairs.append(pair)
        asked = _someone_recent(rng, pairs, _QA12_WINDOWS)
        w.ask(f"Where is {asked}?", room[asked], (told[asked],))
    return w.story()


def compound_coreference(rng: random.Random) -> Story:
    """qa13: "Mary and Daniel went to the bathroom. Then they journeyed to the hallway." x5."""
    w = StoryWriter("qa13")
    room: dict[str, str] = {}
    told: dict[str, tuple[int, int]] = {}
    pairs: list[list[str]] = []
    for _ in range(5):
        pair = rng.sample(PEOPLE, 2)
        first_room = _new_room(rng, room.get(pair[0]), room.get(pair[1]))
        first = w.say(move_sentence(f"{pair[0]} and {pair[1]}", first_room, rng.choice(MOVE_VERBS)))
        dest = _new_room(rng, first_room)
        second = w.say(f"{rng.choice(CONNECTIVES)} they {rng.choice(MOVE_VERBS)} to the {dest}.")
        for person in pair:
            room[person], told[person] = dest, (first, second)
        pairs.append(pair)
        asked = _someone_recent(rng, pairs, _QA13_WINDOWS)
        w.ask(f"Where is {asked}?", room[asked], told[asked])
    return w.story()


# --- qa14: time ---------------------------------------------------------------------------------------


def _time_sentence(rng: random.Random, person: str, place: str, when: str) -> str:
    verb = rng.choice(MOVE_VERBS)
    if rng.random() < 0.5:
        return f"{when[0].upper()}{when[1:]} {person} {verb} to the {place}."
    return f"{person} {verb} to the {place} {when}."


def time_reasoning(rng: random.Random) -> Story:
    """qa14: moves at four times of day, told out of order; "Where was Julie before the school?"

    Nobody visits a place twice, so "before the school" always names one moment.
    """
    w = StoryWriter("qa14")
    # person -> {time index: (place, line)}
    moves: dict[str, dict[int, tuple[str, int]]] = {p: {} for p in PEOPLE_QA10}

    def tell(person: str, when: int) -> None:
        visited = {place for place, _ in moves[person].values()}
        place = rng.choice([p for p in PLACES_QA10 if p not in visited])
        line = w.say(_time_sentence(rng, person, place, TIMES[when]))
        moves[person][when] = (place, line)

    def tell_random() -> None:
        free = [(p, t) for p in PEOPLE_QA10 for t in range(len(TIMES)) if t not in moves[p]]
        free = [(p, t) for p, t in free if (p, t) not in reserved]
        person = rng.choice(sorted({p for p, _ in free}))
        tell(person, rng.choice([t for p, t in free if p == person]))

    def answerable() -> list[tuple[str, int]]:
        return [(p, t) for p, m in moves.items() for t in m if t - 1 in m]

    # The opening statements (2, 4 or 6) hide one answerable pair: two consecutive moves of one person.
    opening = _weighted(rng, _TIME_OPENING_WEIGHTS)
    person = rng.choice(PEOPLE_QA10)
    start = rng.randrange(len(TIMES) - 1)
    spots = sorted(rng.sample(range(min(opening, 4)), 2))
    hidden = dict(zip(spots, rng.sample((start, start + 1), 2), strict=True))
    reserved = {(person, t) for t in hidden.values()}
    for i in range(opening):
        if i in hidden:
            reserved.discard((person, hidden[i]))
            tell(person, hidden[i])
        else:
            tell_random()
    for q in range(5):
        if q:
            tell_random()
            tell_random()
        # Mostly about the pair of moves completed last (as in the real files), else any answerable one.
        options = answerable()
        newest = max(options, key=lambda o: max(moves[o[0]][o[1]][1], moves[o[0]][o[1] - 1][1]))
        asked, when = newest if rng.random() < 0.6 else rng.choice(options)
        place, line = moves[asked][when]
        before, before_line = moves[asked][when - 1]
        w.ask(f"Where was {asked} before the {place}?", before, (line, before_line))
    return w.story()


# --- qa15-qa16: deduction and induction ------------------------------------------------------------


def basic_deduction(rng: random.Random) -> Story:
    """qa15: "Mice are afraid of wolves. Gertrude is a mouse. What is gertrude afraid of?" """
    w = StoryWriter("qa15")
    species = list(FEARFUL_SPECIES)
    fears = {s: rng.choice([t for t in species if t != s]) for s in species}
    member = {name: rng.choice(species) for name in FEARFUL_NAMES}
    # A random order of the eight statements in which every name comes after the rule about its kind.
    while True:
        order = rng.sample(species + list(FEARFUL_NAMES), len(species) + len(FEARFUL_NAMES))
        if all(order.index(member[n]) < order.index(n) for n in FEARFUL_NAMES):
            break
    rule_line: dict[str, int] = {}
    name_line: dict[str, int] = {}
    for item in order:
        if item in FEARFUL_SPECIES:
            rule_line[item] = w.say(f"{item.capitalize()} are afraid of {fears[item]}.")
        else:
            name_line[item] = w.say(f"{item} is a {FEARFUL_SPECIES[member[item]]}.")
    for _ in range(4):
        name = rng.choice(FEARFUL_NAMES)
        feared = FEARFUL_SPECIES[fears[member[name]]]
        w.ask(f"What is {name.lower()} afraid of?", feared, (name_line[name], rule_line[member[name]]))
    return w.story()


def basic_induction(rng: random.Random) -> Story:
    """qa16: "Lily is a frog. Lily is green. Greg is a frog. What color is Greg?"

    Every animal of the asked species that has a colour has the same one, so the answer is determined.
    """
    w = StoryWriter("qa16")
    names = rng.sample(INDUCTION_NAMES, len(INDUCTION_NAMES))
    asked, others = names[-1], names[:-1]
    target = rng.choice(INDUCTION_SPECIES)
    same = _weighted(rng, _SAME_SPECIES_WEIGHTS)
    rest = [s for s in INDUCTION_SPECIES if s != target]
    kinds = [target] * same + [rng.choice(rest) for _ in range(len(others) - same)]
    rng.shuffle(kinds)
    species = dict(zip(others, kinds, strict=True)) | {asked: target}
    color_of = {s: rng.choice(COLORS) for s in INDUCTION_SPECIES}
    # The other four animals: each one's species, then (some statements later) its colour.
    events: list[tuple[str, bool]] = []  # (name, whether this is its colour)
    pending = rng.sample(others, len(others))
    uncolored: list[str] = []
    while pending or uncolored:
        if pending and (not uncolored or rng.random() < 0.5):
            uncolored.append(pending.pop())
            events.append((uncolored[-1], False))
        else:
            events.append((uncolored.pop(rng.randrange(len(uncolored))), True))
    # The species of the animal asked about comes last, or anywhere (which ends 31% of the stories with
    # it, as in the real files).
    at = len(events) if rng.random() < _ASKED_LAST else rng.randrange(len(events) + 1)
    events.insert(at, (asked, False))
    species_line: dict[str, int] = {}
    color_line: dict[str, int] = {}
    for name, is_color in events:
        if is_color:
            color_line[name] = w.say(f"{name} is {color_of[species[name]]}.")
        else:
            species_line[name] = w.say(f"{name} is a {species[name]}.")
    witness = max((n for n in others if species[n] == target), key=species_line.__getitem__)
    w.ask(
        f"What color is {asked}?",
        color_of[target],
        (species_line[asked], species_line[witness], color_line[witness]),
    )
    return w.story()


# --- qa17-qa19: space and size ----------------------------------------------------------------------


def _relation_sentence(
    rng: random.Random, a: str, pos_a: tuple[int, int], b: str, pos_b: tuple[int, int]
) -> str:
    """One of the two ways to say where neighbours ``a`` and ``b`` are relative to each other."""
    if rng.random() < 0.5:
        a, pos_a, b, pos_b = b, pos_b, a, pos_a
    step = (pos_a[0] - pos_b[0], pos_a[1] - pos_b[1])
    relation = next(r for r, d in POSITIONS.items() if d == step)
    return f"The {a} is {relation} the {b}."


def positional_reasoning(rng: random.Random) -> Story:
    """qa17: two facts place three shapes on a grid; eight yes/no questions about the outer two."""
    w = StoryWriter("qa17")
    first, middle, last = rng.sample(SHAPES, 3)
    step1 = rng.choice(list(POSITIONS.values()))
    step2 = rng.choice([s for s in POSITIONS.values() if s != (-step1[0], -step1[1])])
    pos = {first: (0, 0), middle: step1, last: (step1[0] + step2[0], step1[1] + step2[1])}
    facts = [(first, middle), (middle, last)]
    rng.shuffle(facts)
    mentions: dict[str, int] = {}
    for a, b in facts:
        line = w.say(_relation_sentence(rng, a, pos[a], b, pos[b]))
        mentions[a if a != middle else b] = line
    for _ in range(8):
        a, b = rng.sample((first, last), 2)
        dx, dy = pos[a][0] - pos[b][0], pos[a][1] - pos[b][1]
        holds = {r: (d[0] * dx + d[1] * dy) > 0 for r, d in POSITIONS.items()}
        truth = rng.random() < 0.5
        relation = rng.choice([r for r, h in holds.items() if h == truth])
        w.ask(f"Is the {a} {relation} the {b}?", "yes" if truth else "no", (mentions[a], mentions[b]))
    return w.story()


def _size_questions(
    facts: dict[tuple[str, str], int],
) -> dict[tuple[str, str], tuple[int, int]]:
    """(bigger, smaller) -> the two facts of its only two-step chain, for pairs no one fact relates."""
    chains: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for (big, mid), line1 in facts.items():
        for (mid2, small), line2 in facts.items():
            if mid2 == mid and (big, small) not in facts:
                chains.setdefault((big, small), []).append((line1, line2))
    return {pair: found[0] for pair, found in chains.items() if len(found) == 1}


def size_reasoning(rng: random.Random) -> Story:
    """qa18: "The box fits inside the chest. The chest is bigger than the chocolate." Does ... fit in ...?"""
    while True:  # in a few stories all fifteen facts leave no question: start again
        story = _size_story(rng)
        if story is not None:
            return story


def _size_story(rng: random.Random) -> Story | None:
    w = StoryWriter("qa18")
    ranked = list(SMALL_THINGS) + rng.sample(CONTAINERS, len(CONTAINERS))  # smallest first
    unsaid = [(ranked[j], ranked[i]) for i in range(len(ranked)) for j in range(i + 1, len(ranked))]
    facts: dict[tuple[str, str], int] = {}  # (bigger, smaller) -> line
    questions: dict[tuple[str, str], tuple[int, int]] = {}
    while not questions:  # five facts at a time until a question can be asked
        if len(unsaid) < 5:
            return None
        for big, small in [unsaid.pop(rng.randrange(len(unsaid))) for _ in range(5)]:
            if rng.random() < 0.5:
                facts[big, small] = w.say(f"The {small} fits inside the {big}.")
            else:
                facts[big, small] = w.say(f"The {big} is bigger than the {small}.")
        questions = _size_questions(facts)
    options = sorted(questions)
    for _ in range(5):
        big, small = rng.choice(options)
        support = questions[big, small]
        # The files cite the fact about the thing the question calls bigger first.
        form = rng.randrange(4)
        if form == 0:
            w.ask(f"Is the {big} bigger than the {small}?", "yes", support)
        elif form == 1:
            w.ask(f"Does the {small} fit in the {big}?", "yes", support)
        elif form == 2:
            w.ask(f"Is the {small} bigger than the {big}?", "no", support[::-1])
        else:
            w.ask(f"Does the {big} fit in the {small}?", "no", support[::-1])
    return w.story()


def _routes(
    cells: set[tuple[int, int]], here: tuple[int, int], goal: tuple[int, int], seen: frozenset
) -> int:
    """How many simple routes lead from ``here`` to ``goal`` through neighbouring occupied cells."""
    if here == goal:
        return 1
    total = 0
    for dx, dy in STEPS.values():
        nxt = (here[0] + dx, here[1] + dy)
        if nxt in cells and nxt not in seen:
            total += _routes(cells, nxt, goal, seen | {nxt})
    return total


def path_finding(rng: random.Random) -> Story:
    """qa19: a two-step route and three side rooms; "How do you go from the kitchen to the garden?"

    Each side room hangs off a room of the route, in a free cell that opens no second way (not even
    through unmentioned neighbouring cells) from the start to the goal.
    """
    w = StoryWriter("qa19")
    start, middle, goal, *side = rng.sample(ROOMS, len(ROOMS))
    first = rng.choice(DIRECTIONS)
    second = rng.choice([d for d in DIRECTIONS if d != OPPOSITE[first]])
    pos = {start: (0, 0), middle: STEPS[first]}
    pos[goal] = (pos[middle][0] + STEPS[second][0], pos[middle][1] + STEPS[second][1])
    links = [(start, first, middle), (middle, second, goal)]  # (from, direction, to)
    for room in side:
        while True:
            anchor = rng.choice((start, middle, goal))
            direction = rng.choice(DIRECTIONS)
            cell = (pos[anchor][0] + STEPS[direction][0], pos[anchor][1] + STEPS[direction][1])
            cells = set(pos.values()) | {cell}
            if (
                cell not in pos.values()
                and _routes(cells, pos[start], pos[goal], frozenset([pos[start]])) == 1
            ):
                break
        pos[room] = cell
        links.append((anchor, direction, room))
    order = rng.sample(range(len(links)), len(links))
    line_of: dict[int, int] = {}
    for i in order:
        here, direction, there = links[i]
        if rng.random() < 0.5:
            line_of[i] = w.say(f"The {there} is {direction} of the {here}.")
        else:
            line_of[i] = w.say(f"The {here} is {OPPOSITE[direction]} of the {there}.")
    w.ask(
        f"How do you go from the {start} to the {goal}?", f"{first[0]},{second[0]}", (line_of[0], line_of[1])
    )
    return w.story()


# --- qa20: motivations -------------------------------------------------------------------------------


def agents_motivations(rng: random.Random) -> Story:
    """qa20: "Sumit is tired. Where will sumit go? Sumit went to the bedroom. Why did sumit go ...?" """
    w = StoryWriter("qa20")
    agents = rng.sample(AGENTS, len(AGENTS))
    takers = set(rng.sample(agents, _weighted(rng, _TAKERS_WEIGHTS)))
    state = {a: rng.choice(list(MOTIVES)) for a in agents}
    steps = {a: 3 if a in takers else 2 for a in agents}  # feel, go, (take)
    done = dict.fromkeys(agents, 0)
    state_line: dict[str, int] = {}
    waiting = list(agents)  # not yet introduced, in order
    while waiting or any(done[a] < steps[a] for a in state_line):
        started = [a for a in state_line if done[a] < steps[a]]
        # a new agent is twice as likely as each busy one to act next (as in the real files)
        agent = rng.choices(started + waiting[:1], weights=[1] * len(started) + [2] * len(waiting[:1]))[0]
        place, thing = MOTIVES[state[agent]]
        name = agent.lower()
        if done[agent] == 0:
            waiting.remove(agent)
            state_line[agent] = w.say(f"{agent} is {state[agent]}.")
            w.ask(f"Where will {name} go?", place, (state_line[agent],))
        elif done[agent] == 1:
            w.say(move_sentence(agent, place, rng.choice(MOVE_VERBS)))
            w.ask(f"Why did {name} go to the {place}?", state[agent], (state_line[agent],))
        else:
            w.say(grab_sentence(agent, thing, rng.choice(GRAB_VERBS), there=True))
            w.ask(f"Why did {name} get the {thing}?", state[agent], (state_line[agent],))
        done[agent] += 1
    return w.story()


GENERATORS: dict[str, Callable[[random.Random], Story]] = {
    "qa11": basic_coreference,
    "qa12": conjunction,
    "qa13": compound_coreference,
    "qa14": time_reasoning,
    "qa15": basic_deduction,
    "qa16": basic_induction,
    "qa17": positional_reasoning,
    "qa18": size_reasoning,
    "qa19": path_finding,
    "qa20": agents_motivations,
}
