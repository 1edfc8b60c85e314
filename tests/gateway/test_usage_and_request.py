import orjson
import pytest

from gateway.chat_request import parse_chat_request
from gateway.errors import BadRequest
from gateway.usage import StreamUsageSniffer, usage_from_body


def test_usage_from_body():
    body = orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}})
    usage = usage_from_body(body)
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 5)
    assert usage_from_body(b'{"id": 1}') is None
    assert usage_from_body(b'{"usage": null}') is None
    assert usage_from_body(b'{"usage": null, "x": {"prompt_tokens": 1}}') is None  # not the usage object


def test_usage_with_nested_details_and_broken_answers():
    nested = orjson.dumps({
        "choices": [],
        "usage": {
            "prompt_tokens": 30, "prompt_tokens_details": {"cached_tokens": 10}, "completion_tokens": 4,
        },
    })
    usage = usage_from_body(nested)
    assert (usage.prompt_tokens, usage.completion_tokens) == (30, 4)
    assert usage_from_body(b'{"usage": {"prompt_tokens": 3, "completion_tokens": ') is None  # cut short
    assert usage_from_body(b'{"usage": {"prompt_tokens": "3", "completion_tokens": 5}}') is None
    spaced = usage_from_body(b'{"usage": {"prompt_tokens":3 , "completion_tokens" : 5 }  }')
    assert spaced.completion_tokens == 5


def test_stream_sniffer_finds_usage_split_across_chunks():
    event = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}\n\n'
    sniffer = StreamUsageSniffer()
    sniffer.feed(b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n' + event[:20])
    sniffer.feed(event[20:] + b"data: [DONE]\n\n")
    assert (sniffer.usage.prompt_tokens, sniffer.usage.completion_tokens) == (7, 2)


def test_valid_request_is_forwarded_untouched():
    raw = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}'
    chat = parse_chat_request(raw)
    assert chat.body is raw and chat.model == "m" and chat.stream is True


def test_azure_deployment_names_the_model():
    chat = parse_chat_request(b'{"messages":[{"role":"user","content":"hi"}]}', deployment="gpt")
    assert chat.model == "gpt" and orjson.loads(chat.body)["model"] == "gpt"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"model":"m"}', "'messages' is required"),
        (b'{"messages":[]}', "non-empty array"),
        (b'{"messages":"hi"}', "non-empty array"),
        (b'{"messages":[1]}', "must be an object"),
        (b'{"messages":[{"role":"wizard","content":"x"}]}', "role"),
        (b'{"messages":[{"role":"user","content":5}]}', "content"),
        (b'{"messages":[{"role":"user","content":"x"}],"model":7}', "'model'"),
        (b'{"messages":[{"role":"user","content":"x"}],"stream":"yes"}', "'stream'"),
    ],
)
def test_bad_requests(raw, fragment):
    with pytest.raises(BadRequest) as caught:
        parse_chat_request(raw)
    assert fragment in caught.value.message


def test_usage_with_nested_details_and_odd_spacing():
    body = (b'{"id":"x","choices":[{"message":{"content":"the word usage appears"}}],'
            b'"usage": {"prompt_tokens" : 12, "completion_tokens":4, "total_tokens":16,'
            b'"prompt_tokens_details":{"cached_tokens":8}}}')
    usage = usage_from_body(body)
    assert (usage.prompt_tokens, usage.completion_tokens) == (12, 4)
    assert usage_from_body(b'{"usage": {"total_tokens": 3}}') is None


def test_usage_of_the_other_apis():
    responses = orjson.dumps({"usage": {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 0},
                                        "output_tokens": 2, "total_tokens": 9}})
    assert (usage_from_body(responses).prompt_tokens, usage_from_body(responses).completion_tokens) == (7, 2)
    embeddings = orjson.dumps({"data": [], "usage": {"prompt_tokens": 4, "total_tokens": 4}})
    assert (usage_from_body(embeddings).prompt_tokens, usage_from_body(embeddings).completion_tokens) == (4, 0)
    sniffer = StreamUsageSniffer()
    sniffer.feed(b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":'
                 b'{"input_tokens":5,"output_tokens":3,"total_tokens":8}}}\n\n')
    assert (sniffer.usage.prompt_tokens, sniffer.usage.completion_tokens) == (5, 3)


@pytest.mark.parametrize("role", [{"x": 1}, ["user"], None, 3])
def test_a_role_that_is_not_a_string_is_a_400_not_a_500(role):
    # A dict or list role once reached a frozenset lookup and raised TypeError (an unhandled 500).
    with pytest.raises(BadRequest) as caught:
        parse_chat_request(orjson.dumps({"messages": [{"role": role, "content": "x"}]}))
    assert caught.value.param == "messages[0].role"
