"""python -m pyeagle.chat: scripted (pipe) and interactive (pty) sessions, KV reuse across turns, a full
context, a hostile chat template. Tiny random models: replies are gibberish, compared token for token."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from pyeagle import Engine
from pyeagle.chat import ChatSession
from pyeagle.template import ChatTemplate

STATS = re.compile(r"\[\d+ tokens, [\d.]+ tok/s, tau [\d.]+, ttft \d+ ms, prompt \d+ tokens, \d+ reused\]")
LONG = " ".join(["the of and to in is you that it he was for on are as with his they at be this"] * 2)


def chat(model, *args, stdin: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "pyeagle.chat", "-m", str(model), "-t", "1", *args],
                          input=stdin.encode(), capture_output=True, timeout=timeout, cwd=model.parent, env=env)


def expected_replies(model, lines: list[str], n_predict: int) -> list[str]:
    """Greedy replies through Engine.generate directly: turn 1 tokenizes the rendered conversation,
    later turns are the previous prompt + reply tokens (as generated, less a final end-of-generation
    token) + the tokens of the new text."""
    eng = Engine(model, n_ctx=4096, n_threads=1)
    tmpl = ChatTemplate.from_target(eng.target)
    messages, prev_text, prev_ids, replies = [], "", [], []
    for line in lines:
        messages.append({"role": "user", "content": line})
        text = tmpl.render(messages)
        if prev_ids:
            assert text.startswith(prev_text)
            ids = prev_ids + eng.tokenize(text[len(prev_text):], add_special=False)
        else:
            ids = eng.tokenize(text)
        out = eng.generate(ids, max_tokens=n_predict, draft=False)
        assert len(out.tokens) > 1  # a reply to compare, not an immediate end of generation
        replies.append(out.text)
        messages.append({"role": "assistant", "content": out.text})
        reply = out.tokens[:-1] if eng.target.is_eog(out.tokens[-1]) else out.tokens  # the template ends the turn
        prev_text, prev_ids = text + out.text, ids + reply
    return replies


def test_pipe_mode_prints_the_greedy_replies(tiny_f32):
    lines = ["hello", "second line"]
    r = chat(tiny_f32, "-n", "8", "--no-draft", stdin="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr.decode()
    want = "".join(reply + "\n" for reply in expected_replies(tiny_f32, lines, 8))
    assert r.stdout.decode("utf-8") == want
    assert len(STATS.findall(r.stderr.decode())) == 2  # the stats lines go to stderr


def test_pipe_mode_with_a_draft_head_gives_the_plain_replies(tiny_f32, tmp_path):
    from eagle_checkpoints import target_dims, write_eagle12
    from pyeagle.convert import convert
    write_eagle12(tmp_path / "e12", **target_dims(tiny_f32))  # random: almost every draft is rejected
    head = convert(tmp_path / "e12", tiny_f32, tmp_path / "e12.gguf")
    lines = "hello\nsecond line\nthird\n/stats\n"
    r = chat(tiny_f32, "-n", "16", "-md", str(head), "--draft-depth", "4", "--draft-topk", "2", "--draft-tree", "8",
             stdin=lines)
    plain = chat(tiny_f32, "-n", "16", "--no-draft", stdin=lines)
    assert r.returncode == 0 and plain.returncode == 0, r.stderr.decode()
    assert r.stdout == plain.stdout  # lossless, across turns that reuse the KV (and the head's features)
    assert len(STATS.findall(r.stderr.decode())) == 3 and "[3 turns, 48 tokens" in r.stderr.decode()


@pytest.fixture
def session(tiny_f32):
    eng = Engine(tiny_f32, n_ctx=2048, n_threads=1)
    return ChatSession(eng, ChatTemplate.from_target(eng.target), system="Be brief.", n_predict=12)


def test_later_turns_prefill_only_the_new_message(session):
    eng = session.engine
    for i, message in enumerate(["hello", "second line", "and a third", "fourth", "fifth and last"]):
        kv = list(eng.target.tokens)  # what the KV holds before this turn
        out = session.send(message)
        assert out.stats.n_prompt > 0 and out.stats.n_tokens > 0
        assert out.stats.n_reused == len(kv)  # all of it: the previous prompt and reply, as generated
        if i:
            # the new message with its template framing, plus the end of the previous reply's turn
            framed = eng.tokenize(session.template.render(session.messages[-2:-1]))
            assert out.stats.n_prompt - out.stats.n_reused <= len(framed) + 4
    assert session.totals.turns == 5 and len(session.messages) == 1 + 2 * 5


def test_interrupted_reply_is_dropped_and_the_session_goes_on(session):
    first = session.send("hello")
    history = list(session.messages)
    with pytest.raises(KeyboardInterrupt):
        for _ in session.stream("interrupt me"):
            signal.raise_signal(signal.SIGINT)
    assert session.messages == history
    second = session.send("second line")
    assert second.stats.n_reused >= first.stats.n_prompt  # the first exchange is still in the KV

    eng = Engine(session.engine.target_path, n_ctx=2048, n_threads=1)  # the same two turns, uninterrupted
    fresh = ChatSession(eng, session.template, system="Be brief.", n_predict=12)
    fresh.send("hello")
    assert fresh.send("second line").tokens == second.tokens


def test_full_context_drops_old_exchanges_and_skips_a_message_that_cannot_fit(tiny_f32):
    # -c 128 is rounded up to 256 by llama.cpp; a LONG message is ~110 tokens with the template
    lines = [LONG, LONG + " again", " ".join([LONG] * 3), "short"]
    r = chat(tiny_f32, "-c", "128", "-n", "16", "--no-draft", stdin="\n".join(lines) + "\n")
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert "dropped the 1 oldest exchange" in err and "message too long" in err
    assert len(STATS.findall(err)) == 3  # the too-long message was skipped, the rest replied
    # a reply that runs into the end of the context stops there, with a notice
    r = chat(tiny_f32, "-c", "128", "-n", "400", "--no-draft", stdin=LONG + "\n")
    assert r.returncode == 0 and "[context full: the reply stops at" in r.stderr.decode()


def test_unsafe_template_is_refused(tiny_f32):
    r = chat(tiny_f32, "--chat-template", "{{ ''.__class__.__mro__[1].__subclasses__() }}", stdin="hi\n")
    assert r.returncode != 0
    assert "unsafe" in r.stderr.decode() and "Traceback" not in r.stderr.decode()
    assert r.stdout == b""


def test_interactive_session(tiny_f32):
    pexpect = pytest.importorskip("pexpect")
    env = dict(os.environ, PYTHONIOENCODING="utf-8", TERM="dumb")
    child = pexpect.spawn(sys.executable, ["-m", "pyeagle.chat", "-m", str(tiny_f32), "-t", "1", "-n", "8",
                                           "--no-draft"], cwd=str(tiny_f32.parent), env=env, timeout=60,
                          encoding="utf-8", codec_errors="replace")
    try:
        child.expect_exact("/help for commands")
        child.expect_exact("> ")
        child.sendline("hello")
        child.expect(STATS.pattern)
        child.expect_exact("> ")
        child.sendline("/stats")
        child.expect_exact("[1 turns, 8 tokens, mean tau 1.00")
        child.sendline("/reset")
        child.expect_exact("[conversation cleared]")
        child.sendline("/help")
        child.expect_exact("/exit")
        child.expect_exact("> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0

    child = pexpect.spawn(sys.executable, ["-m", "pyeagle.chat", "-m", str(tiny_f32), "-t", "1", "--no-draft"],
                          cwd=str(tiny_f32.parent), env=env, timeout=60)
    try:
        child.expect_exact(b"> ")
        child.sendintr()  # Ctrl-C at the prompt exits, as llama.cpp does
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130
