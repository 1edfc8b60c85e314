"""Context trimming: pure functions, no sockets."""

from __future__ import annotations

from chat_client.context import PER_MESSAGE_OVERHEAD, Turn, build_prompt, estimate_tokens


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_estimate_errs_on_the_high_side():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("abcd") == 2
    assert estimate_tokens("héllo") == 2  # 6 bytes of UTF-8
    assert estimate_tokens("日本語") == 3  # 9 bytes: about one token per character


def test_everything_is_sent_when_it_fits():
    history = [Turn("user", "hi"), Turn("assistant", "hello"), Turn("user", "how are you?")]
    prompt = build_prompt("Be nice.", history, budget=1000)
    assert prompt.messages == [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you?"},
    ]
    assert prompt.dropped == 0 and not prompt.truncated
    assert prompt.estimated_tokens == sum(
        estimate_tokens(m["content"]) + PER_MESSAGE_OVERHEAD for m in prompt.messages
    )


def test_oldest_turns_are_dropped_first_and_never_from_the_middle():
    history = [Turn("user" if i % 2 == 0 else "assistant", f"{i}:" + words(20)) for i in range(11)]
    budget = 200
    prompt = build_prompt("System.", history, budget)
    assert prompt.estimated_tokens <= budget
    assert prompt.messages[0]["role"] == "system"
    kept = [m["content"].split(":")[0] for m in prompt.messages[1:]]
    assert kept == [str(i) for i in range(11 - len(kept), 11)]  # the newest run, in order
    assert 0 < prompt.dropped < 11 and prompt.dropped == 11 - len(kept)


def test_a_big_old_turn_ends_the_run_even_if_smaller_older_ones_would_fit():
    history = [Turn("user", "tiny"), Turn("assistant", words(500)), Turn("user", "latest")]
    prompt = build_prompt("", history, budget=100)
    assert [m["content"] for m in prompt.messages] == ["latest"]
    assert prompt.dropped == 2


def test_the_newest_turn_is_always_sent_cut_to_the_budget_if_needed():
    history = [Turn("user", "old"), Turn("user", "x" * 3000)]
    prompt = build_prompt("System prompt.", history, budget=200)
    assert [m["role"] for m in prompt.messages] == ["system", "user"]
    assert prompt.truncated and prompt.dropped == 1
    assert prompt.messages[1]["content"] == "x" * len(prompt.messages[1]["content"])
    assert prompt.estimated_tokens <= 200
    # The cut is as long as the budget allows: one more character would not fit.
    room = 200 - (estimate_tokens("System prompt.") + PER_MESSAGE_OVERHEAD) - PER_MESSAGE_OVERHEAD
    assert (
        estimate_tokens(prompt.messages[1]["content"])
        <= room
        < estimate_tokens(prompt.messages[1]["content"] + "xxx")
    )


def test_no_system_prompt_and_no_history():
    assert build_prompt("", [], 100).messages == []
    assert build_prompt("S", [], 100).messages == [{"role": "system", "content": "S"}]


def test_a_custom_counter_can_be_injected():
    history = [Turn("user", "a"), Turn("assistant", "b"), Turn("user", "c")]
    prompt = build_prompt("", history, budget=3 * (10 + PER_MESSAGE_OVERHEAD), count=lambda text: 10)
    assert [m["content"] for m in prompt.messages] == ["a", "b", "c"]


def test_trimming_goes_in_question_answer_pairs_so_no_answer_follows_the_system_prompt():
    # Room for the newest question and one more turn: the lone answer "b" must not be sent.
    history = [Turn("user", "a"), Turn("assistant", "b"), Turn("user", "c")]
    one = 10 + PER_MESSAGE_OVERHEAD
    prompt = build_prompt("S", history, budget=3 * one, count=lambda text: 10)
    assert [m["role"] for m in prompt.messages] == ["system", "user"]
    assert prompt.dropped == 2 and prompt.estimated_tokens == 2 * one
    # Over every budget, the turns after the system prompt alternate user, assistant, ..., user.
    long = [Turn("user" if i % 2 == 0 else "assistant", f"{i} " + words(i % 7 * 5)) for i in range(21)]
    for budget in range(20, 600, 7):
        roles = [m["role"] for m in build_prompt("System.", long, budget).messages[1:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"], budget


def test_a_question_whose_reply_failed_is_left_out_so_roles_still_alternate():
    history = [Turn("user", "q1"), Turn("user", "q2"), Turn("assistant", "a2"), Turn("user", "q3")]
    prompt = build_prompt("", history, budget=1000)
    assert [m["content"] for m in prompt.messages] == ["q2", "a2", "q3"]
