"""Deterministic sample movies: the same (n, seed) always gives the same, distinct rows."""

from __future__ import annotations

import random
from collections.abc import Iterator

from moviectl.infra.movie_fields import GENRES

DEFAULT_SEED = 1895  # the Lumière brothers' first screening


def _unique(words: str, underscore_as: str = "_") -> tuple[str, ...]:
    """Distinct words in order (a repeated word would repeat titles)."""
    return tuple(dict.fromkeys(w.replace("_", underscore_as) for w in words.split()))


_ADJ = _unique(
    "Silent Crimson Hidden Broken Golden Last Burning Frozen Midnight Savage Distant Hollow "
    "Wicked Electric Forgotten Endless Scarlet Secret Lonely Wild Dark Bright Quiet Restless "
    "Shattered Velvet Iron Glass Paper Northern Southern Eastern Western Lost Fallen Rising "
    "Sleeping Bitter Sweet Stolen Haunted Final First Second Little Great Crooked Gentle "
    "Invisible Reckless Wandering Painted Copper Silver Emerald Violet Black White Blue Grey "
    "Burning Howling Drowned Sunken Shining Faded Furious Tender Brave Cursed Blessed Ancient "
    "Modern Empty Perfect Strange Secondhand Borrowed Desperate Dangerous Curious"
)
_NOUN = _unique(
    "Harbor River Empire Garden Witness Stranger Kingdom Letter Promise Mirror Shadow Horizon "
    "Station Summer Winter Orchard Lighthouse Carnival Frontier Circuit Signal Verdict "
    "Covenant Machine Hotel Voyage Detective Widow Soldier Dancer Thief Pilgrim Tide Storm "
    "Fortune Alibi Ballad Canyon Citadel Compass Corridor Desert Diary Echo Engine Festival "
    "Fugitive Gambit Glacier Heist Island Jungle Labyrinth Legacy Meridian Monsoon Nocturne "
    "Outpost Paradox Prophecy Quarry Requiem Rhapsody Sanctuary Serenade Sonata Spiral "
    "Syndicate Tempest Testament Threshold Tower Tunnel Uprising Vendetta Vigil Wager"
)
_PLACE = _unique(
    "Vienna Lisbon Tangier Havana Marseille Kyoto Lagos Oslo Palermo Odessa Montreal Quito "
    "Dakar Prague Memphis Reno Tucson Galway Bergen Tbilisi Valparaiso Macau Casablanca "
    "Istanbul Budapest Naples Seville Trieste Krakow Riga Hamburg Antwerp Bristol Glasgow "
    "Cairo Zanzibar Bombay Manila Saigon Shanghai Sapporo Hobart Perth Juneau Sedona Santa_Fe "
    "Dover Calais",
    underscore_as=" ",
)
_PATTERNS = (
    "The {a} {n} of {p}",
    "{p}: The {a} {n}",
    "A {a} {n} in {p}",
    "{a} {n} Over {p}",
    "The {n} from {p} Was {a}",
    "Return of the {a} {n} to {p}",
    "{p} {a} {n}",
    "Nights of the {a} {n} in {p}",
    "The {a} {n}: A {p} Story",
    "Beyond the {a} {n} of {p}",
)
_SPACE = len(_PATTERNS) * len(_ADJ) * len(_NOUN) * len(_PLACE)


def _roman(n: int) -> str:
    out = ""
    numerals = (
        (1000, "M"),
        (900, "CM"),
        (500, "D"),
        (400, "CD"),
        (100, "C"),
        (90, "XC"),
        (50, "L"),
        (40, "XL"),
        (10, "X"),
        (9, "IX"),
        (5, "V"),
        (4, "IV"),
        (1, "I"),
    )
    for value, sym in numerals:
        while n >= value:
            out += sym
            n -= value
    return out


def sample_rows(n: int, seed: int = DEFAULT_SEED) -> Iterator[tuple[str, int, str, str | None]]:
    """N plausible movies; the same (n, seed) always gives the same rows, titles all distinct.

    Titles come from a seeded bijection of [0, space): index i picks a pattern and
    words by mixed radix; past the space, sequels get a Roman numeral.
    """
    rng = random.Random(seed)
    step = rng.randrange(1, _SPACE)
    while _gcd(step, _SPACE) != 1:
        step += 1
    offset = rng.randrange(_SPACE)
    la, ln, lp = len(_ADJ), len(_NOUN), len(_PLACE)
    genres, nog = GENRES, len(GENRES)
    for i in range(n):
        k = (offset + i * step) % _SPACE
        k, a = divmod(k, la)
        k, w = divmod(k, ln)
        pat, p = divmod(k, lp)
        title = _PATTERNS[pat].format(a=_ADJ[a], n=_NOUN[w], p=_PLACE[p])
        if i >= _SPACE:
            title += f" {_roman(i // _SPACE + 1)}"
        year = 2025 - int(rng.expovariate(1 / 22)) % 130
        genre = genres[int(rng.random() * nog)]
        r = rng.random()
        rating = None if r < 0.05 else f"{min(9.8, max(1.0, rng.gauss(6.4, 1.3))):.1f}"
        yield title, year, genre, rating


def sample_lines(n: int, seed: int = DEFAULT_SEED) -> Iterator[str]:
    """``sample_rows`` as COPY text lines (the words need no escaping)."""
    null = "\\N"
    for title, year, genre, rating in sample_rows(n, seed):
        yield f"{title}\t{year}\t{genre}\t{rating or null}\n"


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a
