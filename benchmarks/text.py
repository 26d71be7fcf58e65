"""Seeded non-keyword sentences for the negatives stream: everyday talk plus near misses.

Near misses ("hey travis", "a jar of", "alexander") are there on purpose: they are what makes a wake
word fire by itself in a living room. A sentence never contains a keyword phrase as whole words.
"""

from __future__ import annotations

import re

import numpy as np

_OPENERS = (
    "so", "well", "okay", "honestly", "by the way", "you know", "listen", "actually", "right", "anyway",
    "hey travis", "hey jarrod", "hey darling", "hey jimmy", "hey jess", "hey service desk", "hey there",
    "alex", "alexander", "alexandra", "a lexicon", "hey harvey", "hey mavis", "hey marcus",
)
_SUBJECTS = (
    "the kids", "my sister", "our neighbour", "the weather man", "the new manager", "everyone at work",
    "the dog", "your brother", "the bus driver", "the football team", "the guy from the garage",
    "the teacher", "my grandmother", "the people upstairs", "the band", "the committee", "jarred",
    "jervis bay tourism", "the jar vendor", "mister davis", "the electrician",
)
_VERBS = (
    "said", "thinks", "told me", "was wondering if", "forgot that", "decided", "mentioned that",
    "heard that", "wants to know if", "promised", "explained why", "complained that", "noticed that",
)
_CLAUSES = (
    "the lights in the kitchen are still on", "dinner will be ready at seven", "it might rain tomorrow",
    "the train was late again", "we should paint the hallway", "the heating is broken",
    "the garden needs watering", "a jar of honey fell off the shelf", "the harvest was good this year",
    "they are moving to another city", "the television is far too loud", "the meeting moved to friday",
    "the car needs new tyres", "nobody watered the plants", "the cat is hiding under the bed",
    "the election results come out tonight", "the shop closes early on sundays",
    "the film starts at half past eight", "the printer is out of paper", "the bread is in the oven",
    "the parcel arrived this morning", "the jazz festival was cancelled", "the music is too quiet",
    "the windows should stay open", "the match ended in a draw", "the recipe needs more garlic",
    "the kettle is boiling", "the ferry leaves at noon", "the service was excellent",
    "the jarvis cocker documentary is on later", "the harvest moon is bright tonight",
)
_QUESTIONS = (
    "what time is it", "can you pass the salt", "where did you put my keys", "did you call your mother",
    "is it cold outside", "who wants a cup of tea", "have you seen the remote", "are we going out tonight",
    "how was your day", "what should we cook", "could you turn the music down", "when does the game start",
    "do you remember her name", "is the dishwasher finished", "which bus goes to the station",
)


def _contains(sentence: str, phrases: tuple[str, ...]) -> bool:
    words = " " + re.sub(r"[^a-z ]", " ", sentence.lower()) + " "
    return any(f" {p} " in words for p in phrases)


def sentence(rng: np.random.Generator, forbidden: tuple[str, ...]) -> str:
    """One random sentence that contains none of the ``forbidden`` phrases (e.g. ``"hey jarvis"``)."""
    while True:
        kind = rng.integers(4)
        if kind == 0:
            s = str(rng.choice(_QUESTIONS))
        elif kind == 1:
            s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_CLAUSES)}"
        elif kind == 2:
            s = f"{rng.choice(_OPENERS)}, {rng.choice(_QUESTIONS)}"
        else:
            s = f"{rng.choice(_OPENERS)}, {rng.choice(_CLAUSES)}"
        if not _contains(s, forbidden):
            return s
