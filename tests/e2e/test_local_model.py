"""The embedded default with the real local model: a paraphrase finds its passage.

Every query below shares no content word with the page it must find, so only an
embedding of meaning can rank that page first (the hashed lexical fake cannot). The
pages also carry a running header and footer, which must not reach the chunks.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from tests.e2e.conftest import (
    Proc,
    free_port,
    get_json,
    sheaf_env,
    start,
    upload,
    wait_ready,
    wait_status,
)
from tests.samples import make_pdf

pytestmark = pytest.mark.e2e

BODIES = [
    "Our cat sleeps most of the afternoon on the warm windowsill and chases moths at "
    "night. She purrs loudly when her bowl is filled, ignores the dog next door, and "
    "sharpens her claws on the old sofa. Each evening she climbs onto the bookshelf, "
    "watches the garden birds with great interest, and then curls up in a basket of clean"
    " laundry until dawn. The vet says she is healthy and a little too heavy.",
    "The bakery opens at six; its sourdough loaves are proofed overnight and baked in a "
    "wood-fired oven. The baker shapes rye rolls, croissants and seeded baguettes by "
    "hand, and the first customers queue outside before sunrise for warm pastries. Flour "
    "arrives weekly from a mill down the valley, and leftover loaves go to the shelter at"
    " closing. Its cinnamon buns sell out by nine.",
    "Turnover grew by twelve percent over the last three months, driven by subscription "
    "renewals in Europe. Operating margins widened as hosting costs fell, and the board "
    "raised its forecast for the full year. Cash reserves now cover eighteen months of "
    "spending, and the firm plans to hire forty engineers once the audit is complete. "
    "Shareholders will receive a dividend.",
    "Hikers ought to carry water, a map and a rain jacket; the ridge trail is closed "
    "during thunderstorms. The route climbs eight hundred metres through pine forest "
    "before reaching the summit cairn, where the wind can be fierce. Sturdy boots, a "
    "torch and spare socks are wise, and rangers advise starting before noon to descend "
    "in daylight. Camping is allowed by the lake.",
    "The vaccine trial enrolled four hundred volunteers; side effects were mild and "
    "short-lived. Most participants reported a sore arm or a slight fever for a day, and "
    "no serious reactions were recorded during six months of follow-up. Regulators will "
    "review the antibody data this winter before deciding whether older adults get the "
    "shot. A booster study starts next spring.",
]
# (query, page it must find first)
PARAPHRASES = [
    ("Where can I buy fresh bread early in the morning?", 2),
    ("What should I pack for a mountain walk?", 4),
    ("Did the company earn more money recently?", 3),
    ("Is the new immunisation safe?", 5),
    ("Where does the kitten like to nap?", 1),
]
STOP = {"the", "a", "an", "in", "of", "and", "to", "is", "i", "for", "can", "what", "where", "did"}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower())) - STOP


def test_the_queries_are_paraphrases() -> None:
    for query, page in PARAPHRASES:
        assert not words(query) & words(BODIES[page - 1]), query


async def test_a_paraphrase_finds_its_page_on_the_embedded_default(
    tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    env = sheaf_env(SHEAF_WORKERS="1")
    del env["SHEAF_EMBEDDER"]  # the embedded default, as `sheaf up` runs it for a user
    proc = start(procs, ["-m", "sheaf", "up", "--port", str(port)], env, tmp_path, "up")
    url = f"http://127.0.0.1:{port}"
    await wait_ready(url, proc, timeout=60)
    pages = [
        f"Northwind Almanac, volume 3\n{body}\nPage {n} of {len(BODIES)}"
        for n, body in enumerate(BODIES, start=1)
    ]
    async with aiohttp.ClientSession() as http:
        status, body = await upload(http, url, "almanac", "almanac.pdf", make_pdf(pages))
        assert status == 202, body
        doc = await wait_status(http, url, body["id"], {"completed", "failed"}, timeout=90)
        assert doc["status"] == "completed", doc
        assert doc["chunk_count"] == len(BODIES)  # one chunk per page
        for query, page in PARAPHRASES:
            found = await get_json(
                http, f"{url}/v1/collections/almanac/search?q={quote(query)}&k=3"
            )
            best = found["results"][0]
            assert best["pages"] == [page], (query, found["results"])
            assert "Northwind" not in best["text"]
            assert "Page" not in best["text"]
