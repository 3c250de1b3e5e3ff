"""Chat templates: the GGUF's `tokenizer.chat_template`, rendered in a sandbox.

A chat template is untrusted input (it ships inside a model file), so it is rendered only by
jinja2's ImmutableSandboxedEnvironment: CVE-2024-34359 was exactly an unsandboxed render of a
GGUF template. Templates get the names Hugging Face's renderer provides (messages,
add_generation_prompt, bos_token, eos_token, raise_exception).
"""
from __future__ import annotations

from typing import Sequence

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

# ChatML, used when a model has no template of its own.
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


class TemplateError(ValueError):
    """The chat template does not parse or fails to render."""


def _raise(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        env.globals["raise_exception"] = _raise
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as e:
            raise TemplateError(f"chat template does not parse: {e}") from e
        self.source = source
        self.bos_token, self.eos_token = bos_token, eos_token

    @classmethod
    def from_target(cls, target, override: str | None = None) -> "ChatTemplate":
        """The template in the target GGUF (or `override`: template text or a file path), else ChatML."""
        source = override
        if override is not None and "{" not in override:
            with open(override, encoding="utf-8") as f:
                source = f.read()
        source = source or target.meta("tokenizer.chat_template") or CHATML

        def special(key: str) -> str:
            tok = target.meta(key)
            if not tok:
                return ""
            return target.token_to_piece(int(tok), True).decode("utf-8", errors="replace")

        return cls(source, special("tokenizer.ggml.bos_token_id"), special("tokenizer.ggml.eos_token_id"))

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        try:
            return self._template.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token)
        except jinja2.exceptions.SecurityError as e:
            raise TemplateError(f"chat template tried an unsafe operation: {e}") from e
        except TemplateError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of untrusted template code is the template's
            raise TemplateError(f"chat template failed to render: {e}") from e
