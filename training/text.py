"""Texts to synthesize: keyword checks, generated confusable phrases, common words and sentences.

Confusables are what makes false accepts rare: for "hey jarvis" the model must also hear "hey travis",
"jarvis" alone, "hey service", "hey jar" and so on, labelled as not-the-keyword. They are generated from
the keyword's spelling (onset and vowel substitutions, sub-phrases, truncations), deterministic per seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence

from kws_edge.errors import ConfigError

_ALLOWED = re.compile(r"^[a-z][a-z' -]*$")
_VOWELS = re.compile(r"[aeiouy]")
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z",
           "ch", "sh", "th", "tr", "st", "bl", "gr", "pr", "sl", "")
_VOWEL_SWAPS = ("a", "e", "i", "o", "u", "ay", "ee", "oh", "ai", "ou")
_SUFFIXES = ("", "s", "er", "ing", "y", "o", "in", "ous", "ance")

_COMMON_WORDS_TEXT = """
the be to of and a in that have it for not with he as you do at this but his by from they we say her she
or an will my one all would there their what so out if about who get which me when make can like time
just him know take people into year your good some could them see other than then now look only come its
over think also back after use two how our work first well way even new want because any these give day
most us is was are were been has had did said each tell very through long where much should before
right here old too same while last might great since against came ask small large next early young
important few public bad able hello morning evening night light lamp music kitchen bedroom door window
table chair water coffee dinner lunch breakfast weather rain sun cloud tomorrow today yesterday please
thanks thank sorry maybe never always often sometimes yes number three four five six seven eight nine
ten hundred thousand minute hour week month open close start finish begin play pause next previous
volume louder quieter bright dark warm cold hot cool fan heater garden garage car house home room office
phone computer screen picture movie show news story book paper letter message call email friend family
mother father brother sister child baby dog cat bird fish tree flower grass street city country world
red green blue yellow black white orange purple brown grey happy sad angry tired hungry busy quiet loud
fast slow early late soon again around behind between under above near far inside outside left turn
walk run sit stand sleep wake eat drink cook clean wash read write sing dance laugh cry remember forget
learn teach help need try keep let put bring carry hold find lose win buy sell pay cost spend save
"""
COMMON_WORDS = tuple(dict.fromkeys(_COMMON_WORDS_TEXT.split()))

_SUBJECTS = ("the man", "my sister", "our neighbour", "the teacher", "a little dog", "the old car",
             "everyone", "nobody", "the kitchen light", "my friend", "the children", "the weather",
             "this computer", "that song", "the news", "your brother", "the cat", "the meeting")
_VERBS = ("is waiting for", "has seen", "will bring", "likes", "forgot about", "was looking at",
          "talked about", "cannot find", "wants to buy", "is cooking", "read about", "called",
          "never liked", "is thinking about", "cleaned", "remembers")
_OBJECTS = ("a cup of coffee", "the blue door", "dinner at eight", "the long story", "a new phone",
            "the garden", "the morning paper", "some music", "a warm jacket", "the small window",
            "the football game", "a glass of water", "the birthday party", "the train station",
            "the red flowers", "the movie last night", "the shopping list", "a quiet evening")
_TAILS = ("", "", "today", "yesterday", "again", "every morning", "before lunch", "after work",
          "for a while", "in the afternoon", "with a smile", "as usual", "at the weekend")


def keyword_label(text: str) -> str:
    """'Hey Jarvis' -> 'hey_jarvis' (the label and model-name form of a keyword)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def check_keyword(text: str) -> str:
    """Normalise a keyword typed as text; raise ConfigError if it is empty or unpronounceable."""
    norm = " ".join(str(text).lower().split())
    if not norm:
        raise ConfigError("keyword is empty: type the words to detect, e.g. keywords = [\"hey jarvis\"]")
    if not _ALLOWED.match(norm):
        raise ConfigError(
            f"keyword {text!r} is not pronounceable text: use letters, spaces, apostrophes and hyphens only "
            "(write numbers as words, e.g. 'computer one')")
    for word in norm.replace("-", " ").split():
        if not _VOWELS.search(word):
            raise ConfigError(
                f"keyword {text!r}: word {word!r} has no vowel, so the TTS engines would spell it letter "
                "by letter; write it as it is pronounced")
    return norm


def _split_onset(word: str) -> tuple[str, str]:
    m = re.match(r"^([^aeiouy]*)(.*)$", word)
    return (m.group(1), m.group(2)) if m else ("", word)


def word_neighbours(word: str, edits: bool = True) -> set[str]:
    """Spelling neighbours of one word: other onsets, other first vowel and (``edits``) truncations.

    No suffixed forms ("jarviss"): they contain the whole keyword, and a keyword followed by more speech
    ("hey jarvis, lights on") must still count as the keyword.
    """
    onset, rest = _split_onset(word)
    out = {o + rest for o in _ONSETS if o != onset and (o + rest)}
    m = re.search(r"[aeiouy]+", rest)
    if m:
        out |= {onset + rest[:m.start()] + v + rest[m.end():] for v in _VOWEL_SWAPS}
    if edits and len(word) >= 4:
        out |= {word[:n] for n in range(2, len(word) - 1) if _VOWELS.search(word[:n])}
    out.discard(word)
    return {w for w in out if _VOWELS.search(w) and len(w) >= 2 and not w.startswith(word)}


def confusables(keyword: str, n: int, seed: int, avoid: Iterable[str] = ()) -> list[str]:
    """Up to ``n`` phrases that sound like ``keyword`` but are not it (nor any phrase in ``avoid``).

    Sub-phrases ("jarvis", "hey"), the last word changed ("hey travis", "hey jarv"), earlier words
    swapped for common words ("okay jarvis"), and the last word swapped for a common word ("hey there").
    """
    words = keyword.split()
    banned = {keyword, *avoid}
    pool: set[str] = set()
    for i in range(len(words)):
        for j in range(i + 1, len(words) + 1):
            if (i, j) != (0, len(words)):
                pool.add(" ".join(words[i:j]))
    last = words[-1]
    for nb in word_neighbours(last, edits=len(words) > 1):
        pool.add(" ".join([*words[:-1], nb]))
        if len(words) > 1:
            pool.add(nb)
    if len(words) > 1:
        for c in ("okay", "say", "hi", "hello", "a", "the", "they", "play", "stay", "may"):
            pool.add(" ".join([c, *words[1:]]))
        pool |= {" ".join([*words[:-1], c]) for c in COMMON_WORDS[:120]}
    rng = random.Random(seed)
    ordered = sorted(p for p in pool if p not in banned)
    rng.shuffle(ordered)
    return ordered[:n]


def common_words(exclude: Iterable[str]) -> list[str]:
    """The built-in common-word list minus any word of the keywords."""
    banned = {w for phrase in exclude for w in phrase.split()}
    return [w for w in COMMON_WORDS if w not in banned]


def sentences(n: int, seed: int, exclude: Sequence[str] = ()) -> list[str]:
    """``n`` generated everyday sentences that contain none of the ``exclude`` phrases or their words."""
    rng = random.Random(seed)
    banned = {w for phrase in exclude for w in phrase.split()}
    words = common_words(exclude)
    out: list[str] = []
    tries = 0
    while len(out) < n and tries < 50 * n + 100:
        tries += 1
        if rng.random() < 0.6:
            parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_TAILS)]
            text = " ".join(p for p in parts if p)
        else:
            text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))
        if any(w in banned for w in text.split()):
            continue
        out.append(text)
    return out
