"""Domain errors. Each message tells the user what to do next.

The CLI turns these into one clear line, services into a 4xx body; a traceback
is only for bugs.
"""


class SceneMindError(RuntimeError):
    """Base class: an error the user can act on.

    A RuntimeError, because that is what the LangGraph server passes through to its clients with
    the message (an error of another type reaches them as "An internal error occurred").
    """


class EmptyInput(SceneMindError, ValueError):
    """The text to think about is empty or only whitespace."""


class InputTooLarge(SceneMindError, ValueError):
    """The text is longer than the configured bound."""


class SceneFileError(SceneMindError, ValueError):
    """An ingest file cannot be read; names the file and the line."""

    def __init__(self, path: str, line: int | None, reason: str):
        self.path, self.line, self.reason = path, line, reason
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


class EmbedderMismatch(SceneMindError):
    """The store was built by a different embedder than the one configured."""


class ModelNotFound(SceneMindError, FileNotFoundError):
    """A model path does not exist or holds no usable model."""


class StoreUnavailable(SceneMindError):
    """The scene store (folder or server) cannot be opened."""


class AdapterMismatch(SceneMindError):
    """A peft adapter does not fit the base model it is loaded onto."""


class DecoderConfigError(SceneMindError, ValueError):
    """A decoder setting cannot work here (unknown spec, quantization without bitsandbytes ...)."""


class DecoderUnavailable(SceneMindError):
    """A decoder model or endpoint is down, times out or answers something that is not an answer."""


class InterpreterOutputInvalid(SceneMindError, ValueError):
    """A model interpreter produced text that is not a valid scene (build_scene falls back to the rules)."""


class AgentUnavailable(SceneMindError):
    """An agent service is down, times out or answers 5xx; names the agent and its URL."""

    def __init__(self, message: str, retriable: bool = True):
        super().__init__(message)
        self.retriable = retriable  # connection errors and 5xx are retried; a timed-out write is not


class AgentRefused(SceneMindError, ValueError):
    """An agent service refused a request (bad token, bad body); its reason is in the message."""


class SettingsError(SceneMindError, ValueError):
    """A setting cannot work as given (bad SCENEMIND_AGENTS, a public address without a token ...)."""


class StoreBusy(SceneMindError):
    """Another process is writing to this data dir (an ingest or a repair); names its pid."""


class StoreDamaged(SceneMindError):
    """A store file is damaged or the store and its couplings index disagree; names the file and the repair."""


class StoreFull(SceneMindError):
    """The disk under the store filled up during a write; the write was rolled back."""


class InputNotText(SceneMindError, ValueError):
    """The input holds bytes that are not valid UTF-8 text (or lone surrogates)."""
