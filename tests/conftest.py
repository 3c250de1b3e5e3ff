from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_gguf import TinySpec, write_tiny_llama  # noqa: E402

# A test run started as a shell's background job (`pytest &`) inherits SIGINT ignored: Python then
# installs no KeyboardInterrupt handler, and the chat's Ctrl-C tests (and the processes they spawn,
# which inherit "ignored" too) would see no Ctrl-C at all. Take Ctrl-C back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_f32(models_dir) -> Path:
    return write_tiny_llama(models_dir / "tiny-f32.gguf", TinySpec(weight_type="f32"))


@pytest.fixture(scope="session")
def tiny_f16(models_dir) -> Path:
    return write_tiny_llama(models_dir / "tiny-f16.gguf", TinySpec(weight_type="f16"))


@pytest.fixture(scope="session")
def tiny_q8(models_dir) -> Path:
    return write_tiny_llama(models_dir / "tiny-q8_0.gguf", TinySpec(weight_type="q8_0"))
