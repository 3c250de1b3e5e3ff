"""OpenAI-shaped completions over an Engine: what `Engine.create_completion` and
`Engine.create_chat_completion` return, and what `python -m pyeagle.server` sends.

The shapes follow OpenAI's `text_completion` / `chat.completion` objects and their streamed
`.chunk` forms, as llama-cpp-python's `Llama` returns them, plus one extension field `pyeagle`
(tokens per target pass `tau`, generated tokens per second, prefill seconds, reused KV tokens).

Streaming sends a prefix of the final text at every point: text that could be the start of a stop
string is held back until it cannot be, so a client never sees a stop string or a piece of one.
"""
from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, Union

if TYPE_CHECKING:
    from .engine import Engine, Output

Messages = Sequence[dict]
FINISH = {"eog": "stop", "stop_token": "stop", "stop_string": "stop", "callback": "stop", "cancelled": "stop",
          "max_tokens": "length", "context_full": "length"}


class ContextLengthError(ValueError):
    """The prompt plus max_tokens does not fit the context (OpenAI's context_length_exceeded)."""
    code = "context_length_exceeded"


def utf8(text: str, where: str) -> str:
    """text, checked to be encodable (JSON may carry lone surrogates, which no tokenizer takes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{where}: not valid Unicode text ({e.reason} at {e.start})") from None
    return text


def message_text(content: Any, where: str) -> str:
    """A message's content: a string, or OpenAI's content parts of type text (joined)."""
    if isinstance(content, str):
        return utf8(content, where)
    if content is None:
        return ""
    if isinstance(content, list):
        out = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"{where}: only text content parts are supported")
            out.append(utf8(part["text"], where))
        return "".join(out)
    raise ValueError(f"{where}: content must be a string or a list of text parts")


def normalize_messages(messages: Messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError(f"messages[{i}] must be an object with a role")
        if m["role"] not in ("system", "developer", "user", "assistant", "tool"):
            raise ValueError(f"messages[{i}]: unknown role {m['role']!r}")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": message_text(m.get("content"), f"messages[{i}]")})
    return out


def stop_list(stop: Union[str, Sequence[str], None]) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    if not all(isinstance(s, str) and s for s in stops) or len(stops) > 16:
        raise ValueError("stop must be a non-empty string or a list of at most 16 of them")
    return [utf8(s, "stop") for s in stops]


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of text could begin a stop string."""
    n = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), n, -1):
            if text.endswith(s[:k]):
                n = k
                break
    return n


def budget(engine: "Engine", ids: Sequence[int], max_tokens: int | None) -> int:
    """max_tokens checked against the context: None means all that is left."""
    n_ctx = engine.target.n_ctx
    room = n_ctx - len(ids)
    if max_tokens is None:
        if room < 1:
            raise ContextLengthError(f"This model's maximum context length is {n_ctx} tokens. However, your "
                                     f"messages resulted in {len(ids)} tokens.")
        return room
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError("max_tokens must be a positive integer")
    if len(ids) + max_tokens > n_ctx:
        raise ContextLengthError(f"This model's maximum context length is {n_ctx} tokens. However, you requested "
                                 f"{len(ids) + max_tokens} tokens ({len(ids)} in the prompt, {max_tokens} in the "
                                 "completion). Please reduce the prompt or the completion length.")
    return max_tokens


def usage(n_prompt: int, out: "Output") -> dict:
    return {"prompt_tokens": n_prompt, "completion_tokens": len(out.tokens),
            "total_tokens": n_prompt + len(out.tokens)}


def extension(out: "Output") -> dict:
    s = out.stats
    return {"tau": round(s.tau, 3), "tokens_per_s": round(s.tokens_per_s, 2), "prefill_s": round(s.t_prefill, 4),
            "total_s": round(s.t_total, 4), "reused_tokens": s.n_reused, "stop_reason": out.stop_reason}


def sampling(temperature: float, top_p: float, seed: int | None) -> dict:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
        raise ValueError("temperature must be a number in [0, 2]")
    if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1:
        raise ValueError("top_p must be a number in (0, 1]")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError("seed must be an integer")
    return {"temperature": float(temperature), "top_p": float(top_p),
            "seed": (secrets.randbits(31) if seed is None else seed & 0x7FFFFFFF)}


@dataclass
class Prepared:
    """A validated request, ready to run (the server validates on the request's thread, then queues)."""
    chat: bool
    ids: list[int]
    max_tokens: int
    stops: list[str]
    kw: dict            # sampling and tree options for Engine.generate
    id: str
    created: int
    model: str
    include_usage: bool


def _generate(engine: "Engine", p: Prepared, cancelled: Callable[[], bool] | None
              ) -> Iterator[Union[str, "Output"]]:
    """Text pieces (never past a stop string, nor into a possible start of one), then the Output.
    cancelled() is asked once per round; True stops the generation there."""
    sent, acc = 0, ""
    out = None
    run = engine._run(p.ids, **engine._stream_kw({**p.kw, "max_tokens": p.max_tokens, "stop": p.stops}))
    for piece in run:
        if isinstance(piece, str):
            if cancelled is not None and cancelled():
                run.close()  # cancels the C++ loop within one round and waits for it
                return
            acc += piece
            safe = len(acc) - held_back(acc, p.stops)
            if safe > sent:
                yield acc[sent:safe]
                sent = safe
        else:
            out = piece
    assert out is not None
    if len(out.text) > sent:
        yield out.text[sent:]
    yield out


def _prepare(engine: "Engine", chat: bool, ids: list[int], max_tokens, temperature, top_p, seed, stop,
             stream_options, model, engine_kw) -> Prepared:
    if stream_options is not None and not isinstance(stream_options, dict):
        raise ValueError("stream_options must be an object")
    return Prepared(chat=chat, ids=ids, max_tokens=budget(engine, ids, max_tokens), stops=stop_list(stop),
                    kw={**sampling(temperature, top_p, seed), **engine_kw},
                    id=f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", created=int(time.time()),
                    model=model or engine.model_name, include_usage=bool((stream_options or {}).get("include_usage")))


def prepare_completion(engine: "Engine", prompt: Union[str, Sequence[int]], max_tokens: int | None = 16,
                       temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
                       stop: Union[str, Sequence[str], None] = None, stream_options: dict | None = None,
                       model: str | None = None, **engine_kw) -> Prepared:
    if isinstance(prompt, str):
        ids = engine.tokenize(utf8(prompt, "prompt"))
    elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(t, int) and not isinstance(t, bool)
                                                             for t in prompt):
        ids = list(prompt)
        if min(ids) < 0 or max(ids) >= engine.target.n_vocab:
            raise ValueError(f"prompt token ids must be in [0, {engine.target.n_vocab})")
    else:
        raise ValueError("prompt must be a non-empty string or a list of token ids")
    if not ids:
        raise ValueError("the prompt is empty")
    return _prepare(engine, False, ids, max_tokens, temperature, top_p, seed, stop, stream_options, model, engine_kw)


def chat_prompt(engine: "Engine", messages: Messages) -> list[int]:
    """The conversation rendered with the model's chat template (jinja2 sandbox) and tokenized; a
    template that writes the BOS token itself gets no second one."""
    text = engine.chat_template.render(normalize_messages(messages))
    bos = engine.chat_template.bos_token
    return engine.tokenize(text, add_special=not (bos and text.startswith(bos)))


def prepare_chat_completion(engine: "Engine", messages: Messages, max_tokens: int | None = None,
                            temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
                            stop: Union[str, Sequence[str], None] = None, stream_options: dict | None = None,
                            model: str | None = None, **engine_kw) -> Prepared:
    return _prepare(engine, True, chat_prompt(engine, messages), max_tokens, temperature, top_p, seed, stop,
                    stream_options, model, engine_kw)


def _chunk(p: Prepared, content: str | None, finish: str | None, role: bool = False) -> dict:
    if p.chat:
        delta = ({"role": "assistant", "content": ""} if role else {} if content is None else {"content": content})
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"id": p.id, "object": "chat.completion.chunk", "created": p.created, "model": p.model,
                "choices": [choice]}
    choice = {"text": content or "", "index": 0, "logprobs": None, "finish_reason": finish}
    return {"id": p.id, "object": "text_completion", "created": p.created, "model": p.model, "choices": [choice]}


def text_of(chunk: Any) -> str | None:
    """A streamed chunk's text when it carries only text (no role, no finish, no usage), else None."""
    if not isinstance(chunk, dict) or len(chunk.get("choices") or ()) != 1 or "usage" in chunk or "pyeagle" in chunk:
        return None
    choice = chunk["choices"][0]
    if choice["finish_reason"] is not None:
        return None
    if "delta" in choice:
        return choice["delta"]["content"] if choice["delta"].keys() == {"content"} else None
    return choice["text"]


def merge_text_chunks(items: list) -> list:
    """Consecutive text-only chunks of a stream as one chunk carrying their text in order (a
    delta may hold any amount of text); other items as they are. Mutates the chunks it merges into."""
    out: list = []
    for item in items:
        text = text_of(item)
        if text is not None and out and text_of(out[-1]) is not None:
            choice = out[-1]["choices"][0]
            if "delta" in choice:
                choice["delta"]["content"] += text
            else:
                choice["text"] += text
        else:
            out.append(item)
    return out


def stream_chunks(engine: "Engine", p: Prepared, cancelled: Callable[[], bool] | None = None) -> Iterator[dict]:
    """The streamed chunks of a prepared request (chat: a first chunk with the role; with
    include_usage a last chunk with the usage, and for chat no choices)."""
    if p.chat:
        yield _chunk(p, None, None, role=True)
    for piece in _generate(engine, p, cancelled):
        if isinstance(piece, str):
            yield _chunk(p, piece, None)
            continue
        last = _chunk(p, None, FINISH.get(piece.stop_reason, "stop"))
        last["pyeagle"] = extension(piece)
        if p.include_usage and not p.chat:
            last["usage"] = usage(len(p.ids), piece)
        yield last
        if p.include_usage and p.chat:
            yield {"id": p.id, "object": "chat.completion.chunk", "created": p.created, "model": p.model,
                   "choices": [], "usage": usage(len(p.ids), piece)}


def respond(engine: "Engine", p: Prepared, cancelled: Callable[[], bool] | None = None) -> dict | None:
    """The whole response of a prepared request (None when cancelled)."""
    out = None
    for piece in _generate(engine, p, cancelled):
        out = piece
    if out is None or isinstance(out, str):
        return None
    finish = FINISH.get(out.stop_reason, "stop")
    if p.chat:
        res = {"id": p.id, "object": "chat.completion", "created": p.created, "model": p.model,
               "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text}, "logprobs": None,
                            "finish_reason": finish}]}
    else:
        res = _chunk(p, out.text, finish)
    res.update(usage=usage(len(p.ids), out), pyeagle=extension(out))
    return res


def create_completion(engine: "Engine", prompt: Union[str, Sequence[int]], stream: bool = False, **kw):
    """OpenAI's /v1/completions on this engine: a text_completion dict, or with stream=True an
    iterator of text_completion chunks. The request is checked before anything runs."""
    p = prepare_completion(engine, prompt, **kw)
    return stream_chunks(engine, p) if stream else respond(engine, p)


def create_chat_completion(engine: "Engine", messages: Messages, stream: bool = False, **kw):
    """OpenAI's /v1/chat/completions on this engine: a chat.completion dict, or with stream=True an
    iterator of chat.completion.chunk dicts (with stream_options={"include_usage": True} a last
    chunk with no choices and the usage). The request is checked before anything runs."""
    p = prepare_chat_completion(engine, messages, **kw)
    return stream_chunks(engine, p) if stream else respond(engine, p)
