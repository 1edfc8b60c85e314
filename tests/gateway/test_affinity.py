"""Conversation affinity: later turns go where the conversation's prefix is cached, unless that costs more."""

from __future__ import annotations

import asyncio

import orjson

from backends.fake import Reply
from gateway.affinity import AffinityTable, conversation_key

SYSTEM = {"role": "system", "content": "Be brief."}


def turns(opening: str, n: int) -> list[list[dict]]:
    """The message lists a chat client sends on turns 1..n of one conversation."""
    history = [SYSTEM, {"role": "user", "content": opening}]
    sent = []
    for turn in range(n):
        sent.append(list(history))
        history += [{"role": "assistant", "content": f"answer {turn}"}, {"role": "user", "content": f"more {turn}"}]
    return sent


def test_every_turn_of_a_conversation_has_the_same_key():
    keys = {conversation_key("m", messages) for messages in turns("tell me about cats", 4)}
    assert len(keys) == 1 and None not in keys
    assert conversation_key("m", turns("tell me about dogs", 1)[0]) not in keys
    assert conversation_key("other-model", turns("tell me about cats", 1)[0]) not in keys
    assert conversation_key("m", [SYSTEM]) is None


def test_table_evicts_least_recently_used():
    table = AffinityTable(capacity=2)
    table.remember(b"a", "x")
    table.remember(b"b", "y")
    assert table.preferred(b"a") == "x"  # refreshes a
    table.remember(b"c", "x")
    assert table.preferred(b"b") is None and len(table) == 2


def llama_like(upstream, name):
    return {"name": name, "url": upstream.openai_url, "kind": "llamacpp", "max_concurrency": 1}


async def send(client, messages):
    raw = await client.chat.completions.with_raw_response.create(model="fake-model", messages=messages)
    return raw.headers["x-gateway-backend"]


async def test_turns_stick_to_their_backend_and_conversations_spread(upstreams, gateway, capfd):
    a, b = await upstreams(name="a"), await upstreams(name="b")
    gw = await gateway([llama_like(a, "a"), llama_like(b, "b")])  # affinity "auto": on for llamacpp
    cats, dogs = turns("cats", 4), turns("dogs", 4)
    async with gw.client() as client:
        served_cats = [await send(client, cats[0])]
        served_dogs = [await send(client, dogs[0])]
        for turn in range(1, 4):
            served_cats.append(await send(client, cats[turn]))
            served_dogs.append(await send(client, dogs[turn]))
    assert len(set(served_cats)) == 1 and len(set(served_dogs)) == 1
    assert served_cats[0] != served_dogs[0]
    lines = [orjson.loads(line) for line in capfd.readouterr().out.splitlines() if '"event":"request"' in line]
    assert [line["affinity"] for line in lines] == ["new", "new"] + ["hit"] * 6


async def test_busy_pinned_backend_with_an_idle_other_moves_the_conversation(upstreams, gateway):
    a, b = await upstreams(name="a"), await upstreams(name="b")
    gw = await gateway([llama_like(a, "a"), llama_like(b, "b")])
    cats = turns("cats", 3)
    async with gw.client() as client:
        home = await send(client, cats[0])
        busy = a if home == "a" else b
        busy.latency = 0.3
        blocker = asyncio.create_task(send(client, cats[1]))  # same conversation: goes home, and stays 0.3 s
        for _ in range(100):
            if busy.in_flight:
                break
            await asyncio.sleep(0.01)
        assert busy.in_flight == 1
        moved = await send(client, cats[1])
        assert await blocker == home
    assert moved != home  # waiting behind a 0.3 s answer costs more than an idle backend


async def test_identical_concurrent_requests_still_spread(upstreams, gateway):
    a, b = await upstreams(name="a", latency=0.3), await upstreams(name="b", latency=0.3)
    gw = await gateway([llama_like(a, "a"), llama_like(b, "b")])
    same = turns("same question", 1)[0]
    async with gw.client() as client:
        served = await asyncio.gather(*(send(client, same) for _ in range(4)))
    assert sorted(served) == ["a", "a", "b", "b"]
    assert a.max_in_flight == b.max_in_flight == 1


async def test_queued_turns_wait_for_their_own_backend_when_all_are_busy(upstreams, gateway):
    a, b = await upstreams(name="a", latency=0.05), await upstreams(name="b", latency=0.05)
    gw = await gateway([llama_like(a, "a"), llama_like(b, "b")], queue_timeout=10)
    chats = [turns(f"chat {i}", 4) for i in range(4)]
    homes: dict[int, set[str]] = {i: set() for i in range(4)}

    async def run_chat(i):
        for messages in chats[i]:
            homes[i].add(await send(client, messages))

    async with gw.client() as client:
        await asyncio.gather(*(run_chat(i) for i in range(4)))
    moves = sum(len(h) - 1 for h in homes.values())
    assert moves <= 2, homes  # a conversation may move once when the others were idle, rarely more
    assert a.max_in_flight == b.max_in_flight == 1


async def test_failed_pinned_backend_fails_over_and_repins(upstreams, gateway):
    a, b = await upstreams(name="a"), await upstreams(name="b")
    gw = await gateway([llama_like(a, "a"), llama_like(b, "b")])
    cats = turns("cats", 3)
    async with gw.client() as client:
        home = await send(client, cats[0])
        broken = a if home == "a" else b
        broken.set_script([Reply(status=500)])
        second = await send(client, cats[1])
        assert second != home
        assert await send(client, cats[2]) == second


async def test_affinity_off_is_plain_balancing(upstreams, gateway):
    a, b = await upstreams(name="a"), await upstreams(name="b")
    gw = await gateway([llama_like(a, "a"), llama_like(b, "b")], affinity="off")
    cats = turns("cats", 4)
    async with gw.client() as client:
        served = [await send(client, messages) for messages in cats]
    assert set(served) == {"a", "b"}


async def test_affinity_results_are_counted(upstreams, gateway):
    a, b = await upstreams(name="a"), await upstreams(name="b")
    gw = await gateway([llama_like(a, "a"), llama_like(b, "b")])
    async with gw.client() as client:
        for messages in turns("cats", 3):
            await send(client, messages)
        import aiohttp

        async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as response:
            text = await response.text()
    assert 'gateway_affinity_total{result="new"} 1.0' in text
    assert 'gateway_affinity_total{result="hit"} 2.0' in text
