"""Run-scoped settings, passed to the graph as `context_schema`.

Every field can be overridden by an env var `SCENEMIND_<FIELD>` (e.g.
`SCENEMIND_TOP_K=5`); explicit values passed to the graph win over env vars.
Heavy resources (embedder, store, decoder) are not here: nodes build them once
per process from these settings.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import MISSING, dataclass, field, fields

from state.errors import SettingsError


@dataclass(kw_only=True)
class Context:
    # Relative on purpose: resolving it here would call getcwd inside the LangGraph server's event loop.
    data_dir: str = field(
        default=".scenemind",
        metadata={"description": "Folder holding the scene store, couplings and crystals (relative to the cwd)."},
    )
    store_url: str = field(
        default="",
        metadata={"description": "Chroma server URL (http://host:port); empty means the embedded store in data_dir."},
    )
    state_url: str = field(
        default="",
        metadata={"description": "PostgreSQL URL (postgresql://user@host:port/db) that holds the couplings index, the "
                                 "writer lock and threads, so processes on several machines share one memory with "
                                 "--store-url; empty means files in data_dir"},
    )
    embedder: str = field(
        default="multilingual-e5-small",
        metadata={"description": "Embedder: the bundled multilingual-e5-small (Russian + English), all-MiniLM-L6-v2 "
                                 "(English only, ~3x faster ingest), or a local sentence-transformers folder."},
    )
    top_k: int = field(default=5, metadata={"description": "Scenes kept in the final field and cited."})
    # Resonance and expansion defaults were chosen by the sweep in evals/RESULTS.md (MuSiQue train).
    dense_k: int = field(default=50, metadata={"description": "Candidates per dense search in the store."})
    lexical_k: int = field(
        default=50, metadata={"description": "Extra candidates from lexical match and from spreading, each."}
    )
    bm25_weight: float = field(default=0.2, metadata={"description": "Weight of BM25 (z-scaled) in the seed score."})
    title_weight: float = field(
        default=1.0, metadata={"description": "Seed bonus of a scene titled by a query entity."}
    )
    mention_weight: float = field(
        default=0.5, metadata={"description": "Seed bonus per query entity a scene mentions, times its rarity."}
    )
    spread_weight: float = field(
        default=2.0, metadata={"description": "Weight of activation spread over couplings (0 = no spreading)."}
    )
    spread_seeds: int = field(default=3, metadata={"description": "Strongest scenes that seed the spreading."})
    spread_restart: float = field(default=0.3, metadata={"description": "Restart probability of personalised PageRank."})
    spread_iterations: int = field(default=15, metadata={"description": "PageRank iterations."})
    spread_floor: float = field(default=1e-4, metadata={
        "description": "Spreading drops activation (a share of the seeds' total) under this at each PageRank step, "
                       "so it reads only the seeds' neighbourhood, at most 1/floor scenes (0 = the whole graph)."})
    max_depth: int = field(default=1, metadata={"description": "Fractal recursion bound for probes (0 = no probes)."})
    retrieval_budget: int = field(default=16, metadata={"description": "Store queries allowed per run."})
    max_probes: int = field(default=6, metadata={"description": "Probes spawned per expansion step."})
    bridge_parents: int = field(default=3, metadata={"description": "Top scenes whose new entities become bridges."})
    bridges_per_scene: int = field(default=2, metadata={"description": "Bridge probes per parent scene."})
    chain_weight: float = field(
        default=1.0, metadata={"description": "How much a probe's scores are discounted by its parent's gap to the top."}
    )
    probe_vectors: str = field(
        default="text",
        metadata={"description": "text: embed 'question + bridge' per probe; compose: question vector + the "
                                 "bridge entity's vector (cached; faster, slightly lower recall)."},
    )
    residual_probes: bool = field(
        default=False, metadata={"description": "Also probe the field's residual after the top scenes (hurt recall)."}
    )
    fixed_point_rank: int = field(
        default=5, metadata={"description": "Expansion stops when no new scene enters this many top places."}
    )
    max_key_scenes: int = field(
        default=50, metadata={"description": "Entities shared by more scenes than this do not link formulas."}
    )
    crystal_threshold: float = field(
        default=0.9, metadata={"description": "Cosine above which a field counts as a recurrence of a crystal."}
    )
    crystal_weight: float = field(default=0.5, metadata={"description": "How much crystals bias resonance."})
    write_back: bool = field(
        default=False,
        metadata={"description": "Write this run's formulas, field and crystals back to memory (on for `chat`). "
                                 "Off: asking is read-only and evaluation stores stay clean."},
    )
    review: bool = field(
        default=False,
        metadata={"description": "Pause before formulate/decode (an interrupt) so a person can drop or pin scenes "
                                 "of the field; resume with Command(resume={'drop': [ids], 'pin': [ids]}). "
                                 "Needs a checkpointer (langgraph dev and chat have one)."},
    )
    max_input_chars: int = field(default=20_000, metadata={"description": "Longest question accepted."})
    decoder: str = field(
        default="extractive",
        metadata={"description": "extractive | hf:/path/to/model | openai:http://host/v1 | field:/path/to/field-decoder"},
    )
    decoder_model: str = field(
        default="",
        metadata={"description": "Model name for an openai: endpoint (empty: the first model the endpoint lists)."},
    )
    decoder_adapter: str = field(
        default="", metadata={"description": "peft (LoRA) adapter folder loaded onto an hf: decoder."}
    )
    decoder_quantize: str = field(
        default="", metadata={"description": "4bit | 8bit: load an hf: decoder through bitsandbytes (empty: full)."}
    )
    max_new_tokens: int = field(default=256, metadata={"description": "Most tokens a model decoder may generate."})
    decoder_timeout_s: float = field(
        default=60.0, metadata={"description": "Seconds a model decoder (or endpoint) may take to answer."}
    )
    interpreter: str = field(
        default="",
        metadata={"description": "Empty: rule-based scenes. Else a `scenemind train interpreter` adapter folder "
                                 "(or hf:/path/to/model) that writes the question's scene as JSON."},
    )
    agents: dict[str, str] = field(
        default_factory=dict,
        metadata={"description": "Node or agent name -> agent service URL (`scenemind serve AGENT`); those nodes "
                                 "run there instead of in this process. Env: SCENEMIND_AGENTS as a JSON object."},
    )
    agent_timeout_s: float = field(
        default=60.0, metadata={"description": "Seconds one call to an agent service may take."}
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            env = os.environ.get(f"SCENEMIND_{f.name.upper()}")
            if env is None:
                continue
            default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
            if getattr(self, f.name) != default:
                continue  # an explicit value wins over the environment
            kind = type(default)
            if kind is dict:
                setattr(self, f.name, _json_map(f.name, env))
                continue
            if kind is bool:
                setattr(self, f.name, env.strip().lower() in ("1", "true", "yes", "on"))
                continue
            setattr(self, f.name, env)  # read as a number by _validate, which names the setting when it is not one
        self._validate()

    def _validate(self) -> None:
        """Each setting of the type it needs (numbers given as text are read as numbers), or one clear error."""
        for f in fields(self):
            default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
            setattr(self, f.name, _checked(f.name, getattr(self, f.name), type(default)))
        for name, low in AT_LEAST.items():
            if getattr(self, name) < low:
                raise SettingsError(f"setting {name} must be at least {low}, got {getattr(self, name)!r}")
        if self.probe_vectors not in ("text", "compose"):
            raise SettingsError(f"setting probe_vectors must be 'text' or 'compose', got {self.probe_vectors!r}")


# Lower bounds where a smaller number cannot work (other counts must not be negative).
AT_LEAST: dict[str, float] = {"top_k": 1, "dense_k": 1, "max_input_chars": 1, "max_new_tokens": 1,
                              "decoder_timeout_s": 0.001, "agent_timeout_s": 0.001}


def _checked(name: str, value: object, kind: type) -> object:
    """`value` as `kind`, or SettingsError naming the setting, what it got and what it needs."""
    want = {int: "an integer", float: "a number", bool: "true or false", str: "text",
            dict: "an object of names to URLs"}.get(kind, kind.__name__)
    bad = SettingsError(f"setting {name} (SCENEMIND_{name.upper()}) must be {want}, got {value!r} "
                        f"({type(value).__name__})")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            return value.strip().lower() in ("true", "1", "yes", "on")
        raise bad
    if kind in (int, float):
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):  # a form or an env file may give numbers as text
            try:
                value = kind(value.strip())
            except ValueError:
                raise bad from None
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, (int, float) if kind is float else int) or not math.isfinite(value):
            raise bad
        if value < 0:
            raise SettingsError(f"setting {name} must not be negative, got {value!r}")
        return kind(value)
    if kind is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise bad
        return value
    if kind is str and not isinstance(value, str):
        raise bad
    return value


_dataclass_init = Context.__init__


def _init(self: Context, **given: object) -> None:
    unknown = sorted(set(given) - {f.name for f in fields(Context)})
    if unknown:
        names = [f.name for f in fields(Context)]
        hints = [f"{u!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(u, names, 1)) else
                 repr(u) for u in unknown]
        raise SettingsError(f"unknown setting(s) {', '.join(hints)}; the settings are: {', '.join(names)}")
    _dataclass_init(self, **given)


# Unknown keys are one clear error (LangGraph builds the Context with `Context(**context)`).
Context.__init__ = _init  # type: ignore[method-assign]


def _json_map(name: str, text: str) -> dict[str, str]:
    """A `{"name": "url"}` env value; anything else is refused with an example."""
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SettingsError(f"SCENEMIND_{name.upper()} must be a JSON object of names to URLs, e.g. "
                            f'{{"resonator": "http://127.0.0.1:8101"}}; got {text[:80]!r}')
    return value
