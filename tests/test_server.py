"""python -m pyeagle.server as a real process on loopback, driven by the official `openai` client
(and httpx where the client cannot send what a test needs: malformed JSON, a dropped stream)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the server tests use the official openai client (pip install openai)")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="pip install 'pyeagle[server]'")
pytest.importorskip("sse_starlette", reason="pip install 'pyeagle[server]'")

from eagle_checkpoints import target_dims, write_eagle3  # noqa: E402
from tiny_gguf import TinySpec, write_tiny_llama  # noqa: E402

from pyeagle.convert import convert  # noqa: E402
from pyeagle.openai_api import merge_text_chunks  # noqa: E402

KEY = "test-key"
QUESTIONS = ["what is the tree", "write a fast model", "one two three one two three", "how do you do"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, target: Path, head: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "pyeagle.server", "-m", str(target), "-md", str(head), "--port", str(self.port),
               "-c", "512", "-t", "1", "--log-level", "warning", *extra]
        # not from the repository root: there `-m pyeagle.server` would import the uncompiled tree
        self.proc = subprocess.Popen(cmd, cwd=tempfile.gettempdir(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not come up in 60 s")

    def client(self, key: str = KEY, **kw) -> "openai.OpenAI":
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60, **kw)

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=5).json()

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("srv")
    target = write_tiny_llama(d / "target.gguf", TinySpec(n_layer=2, output_scale=5.0))
    write_eagle3(d / "head", **target_dims(target), taps=[0, 1, 2])
    return target, convert(d / "head", target, d / "head.gguf")


@pytest.fixture(scope="module")
def server(models):
    s = Server(*models, "--api-key", KEY, "--queue", "64")
    yield s
    s.stop()


def chat(client, question: str, **kw) -> str:
    r = client.chat.completions.create(model="any", messages=[{"role": "user", "content": question}],
                                       temperature=0, **kw)
    return r.choices[0].message.content


def test_models_and_health(server):
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["target"]
    assert server.health()["status"] == "ok"


def test_chat_streamed_equals_non_streamed(server):
    c = server.client()
    r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": QUESTIONS[0]}], temperature=0,
                                  max_tokens=40)
    assert r.object == "chat.completion" and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    ext = r.model_extra["pyeagle"]
    assert ext["tau"] >= 1.0 and ext["tokens_per_s"] > 0
    chunks = list(c.chat.completions.create(model="x", messages=[{"role": "user", "content": QUESTIONS[0]}],
                                            temperature=0, max_tokens=40, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == r.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == r.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_merge_text_chunks_keeps_text_order_and_other_chunks():
    def chat(delta, finish=None):
        return {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def text(t, finish=None):
        return {"id": "t", "object": "text_completion", "choices": [{"index": 0, "text": t, "finish_reason": finish}]}

    role, end, done = chat({"role": "assistant", "content": ""}), chat({}, "stop"), object()
    end["pyeagle"] = {"tau": 1.0}
    merged = merge_text_chunks([role, chat({"content": "a"}), chat({"content": "b"}), chat({"content": "c"}), end, done])
    assert merged[0] is role and merged[2] is end and merged[3] is done and len(merged) == 4
    assert merged[1]["choices"][0]["delta"] == {"content": "abc"}
    usage = {"choices": [], "usage": {"completion_tokens": 3}}
    merged = merge_text_chunks([text("x"), text("y"), text("", "length"), usage])
    assert [m["choices"][0]["text"] for m in merged[:2]] == ["xy", ""] and merged[2] is usage
    # a chunk after a non-text item starts a new one
    assert len(merge_text_chunks([text("x"), done, text("y")])) == 3


def test_streamed_rounds_share_chunks_and_the_text_is_whole(server):
    """Rounds that finish within --stream-interval of the last chunk go out as one chunk, in one
    write; the first text goes at once; the text is the non-streamed text."""
    body = {"model": "x", "messages": [{"role": "user", "content": QUESTIONS[1]}], "max_tokens": 48,
            "temperature": 0}
    headers = {"authorization": f"Bearer {KEY}"}
    whole = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers, timeout=60).json()
    events = []
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**body, "stream": True}, headers=headers,
                      timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    texts = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and "content" in c["choices"][0]["delta"]
             and "role" not in c["choices"][0]["delta"]]
    assert "".join(texts) == whole["choices"][0]["message"]["content"]
    n_rounds = whole["usage"]["completion_tokens"] / whole["pyeagle"]["tau"]
    assert len(texts) < n_rounds  # the tiny model's rounds take well under the 50 ms interval


def test_completions_text_and_token_prompts(server):
    c = server.client()
    a = c.completions.create(model="x", prompt="the tree of", max_tokens=12, temperature=0)
    raw = json.loads(httpx.post(server.url + "/v1/completions", headers={"authorization": f"Bearer {KEY}"},
                                json={"prompt": "the tree of", "max_tokens": 1, "temperature": 0}).text)
    assert a.object == "text_completion" and a.usage.prompt_tokens == raw["usage"]["prompt_tokens"]
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="x", prompt="the tree of", max_tokens=12, temperature=0, stream=True))
    assert streamed == a.choices[0].text
    assert a.choices[0].finish_reason in ("stop", "length")
    b = c.completions.create(model="x", prompt=[1, 20, 30, 40], max_tokens=5, temperature=0)
    assert b.usage.prompt_tokens == 4


def test_stop_strings_are_never_sent(server):
    c = server.client()
    full = c.completions.create(model="x", prompt="one two three", max_tokens=40, temperature=0).choices[0].text
    if len(full) < 6:
        pytest.skip("the tiny model's continuation is too short to cut")
    stop = full[3:6]
    cut = c.completions.create(model="x", prompt="one two three", max_tokens=40, temperature=0, stop=[stop])
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="x", prompt="one two three", max_tokens=40, temperature=0, stop=[stop], stream=True))
    assert cut.choices[0].text == full[:full.index(stop)] == streamed
    assert cut.choices[0].finish_reason == "stop"


def test_concurrent_clients_get_their_own_answers(server):
    c = server.client()
    want = {q: chat(c, q, max_tokens=24) for q in QUESTIONS}
    got: dict = {}
    errors: list = []

    def client_thread(i: int):
        try:
            cl = server.client()
            for k in range(3):
                q = QUESTIONS[(i + k) % len(QUESTIONS)]
                got.setdefault(q, []).append(chat(cl, q, max_tokens=24))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for q, answers in got.items():
        assert all(a == want[q] for a in answers), q


def test_a_dropped_stream_is_cancelled_and_the_next_request_served(server):
    before = server.health()
    body = {"model": "x", "messages": [{"role": "user", "content": QUESTIONS[1]}], "max_tokens": 400,
            "temperature": 1.0, "seed": 3, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {KEY}"}, timeout=30) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    # the connection is closed: the generation stops within a round
    t0 = time.time()
    assert chat(server.client(), QUESTIONS[2], max_tokens=8)
    assert time.time() - t0 < 10
    deadline = time.time() + 10
    while server.health()["cancelled"] <= before["cancelled"] and time.time() < deadline:
        time.sleep(0.1)
    assert server.health()["cancelled"] == before["cancelled"] + 1


def test_errors_have_openai_shape(server):
    h = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    r = httpx.post(server.url + "/v1/chat/completions", headers=h, content=b'{"messages": [')
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}],
                                                temperature="hot")
    assert e.value.status_code == 400 and "temperature" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        server.client().chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=10_000)
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        server.client().chat.completions.create(model="x", messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").models.list()
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    for path, body in (("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}'),
                       ("/v1/completions", b'{"prompt": "a\\ud800b"}')):  # a lone surrogate: not text
        r = httpx.post(server.url + path, headers=h, content=body)
        assert r.status_code == 400 and "not valid Unicode" in r.json()["error"]["message"], r.text
    r = httpx.get(server.url + "/v1/nothing", headers=h)
    assert r.status_code == 404 and "error" in r.json()
    # the model is fixed at start: a request's model name opens nothing
    assert chat(server.client(), "hi", max_tokens=4) is not None


def test_bounded_load_no_lost_or_mixed_responses_and_flat_memory(server):
    c = server.client()
    want = {q: chat(c, q, max_tokens=8) for q in QUESTIONS}
    for _ in range(3):  # warm up allocations before the baseline
        chat(c, QUESTIONS[0], max_tokens=8)
    rss0 = server.rss_mib()
    results: list = []
    lock = threading.Lock()

    def client_thread(i: int):
        cl = server.client()
        for k in range(20):
            q = QUESTIONS[(i * 7 + k) % len(QUESTIONS)]
            try:
                a = chat(cl, q, max_tokens=8)
            except Exception as e:  # noqa: BLE001
                a = e
            with lock:
                results.append((q, a))

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 160
    bad = [(q, a) for q, a in results if a != want[q]]
    assert not bad, bad[:3]
    grown = server.rss_mib() - rss0
    assert grown < 25, f"RSS grew by {grown:.1f} MiB over 160 requests"


def test_full_queue_answers_503(models):
    s = Server(*models, "--queue", "1")
    try:
        c = s.client(key="unused")
        codes: list = []

        def one():
            try:
                c.chat.completions.create(model="x", messages=[{"role": "user", "content": QUESTIONS[1]}],
                                          max_tokens=400, temperature=1.0, seed=1)
                codes.append(200)
            except openai.APIStatusError as e:
                codes.append(e.status_code)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert 503 in codes and 200 in codes, codes
        assert set(codes) <= {200, 503}, codes
        assert s.health()["status"] == "ok"
    finally:
        s.stop()


def test_request_timeout_answers_504_and_cancels(models):
    s = Server(*models, "--timeout", "0.02")  # 450 tokens of the tiny model take ~0.1 s
    try:
        with pytest.raises(openai.APIStatusError) as e:
            s.client(key="unused").chat.completions.create(
                model="x", messages=[{"role": "user", "content": QUESTIONS[1]}], max_tokens=450, temperature=0)
        assert e.value.status_code == 504
        deadline = time.time() + 10
        while s.health()["cancelled"] < 1 and time.time() < deadline:
            time.sleep(0.1)
        assert s.health()["cancelled"] == 1
    finally:
        s.stop()
