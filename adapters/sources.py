"""Scene sources on disk: jsonl scenes, text/markdown files, {title,text} corpus json.

Every file is read and checked before anything is written: one bad line (broken
UTF-8, broken JSON, JSON nested too deeply, a record without text, an explicit
id given to two different texts) fails the whole ingest with the file and line
named, and the store stays as it was. Fix the line and rerun; ids are stable,
so nothing is doubled. One scene-size bound for every format: a long
paragraph of a text file is cut into scenes of about CHUNK_CHARS at sentence
ends; a json record over MAX_SCENE_CHARS is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from state.errors import SceneFileError

CHUNK_CHARS = 1_000
MAX_SCENE_CHARS = 100_000
TOO_DEEP = "JSON nested too deeply to read (deeper than Python's recursion limit); flatten it"


@dataclass
class SceneRecord:
    text: str
    title: str | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    origin: str = field(default="", compare=False)  # "file:line", for messages about this record
    # Where the scene comes from: a file's absolute path, or a document id the caller (or a jsonl record's
    # "source") gives; re-ingesting a source replaces its scenes. `position` is the scene's place in it.
    source: str | None = None
    position: int | None = None

    @property
    def scene_id(self) -> str:
        return self.id or content_id(self.title, self.text)


def content_id(title: str | None, text: str) -> str:
    """Stable id from content: the same passage ingested twice gets the same id."""
    body = f"{title}\n{text}" if title else text
    return "s-" + hashlib.sha256(body.encode("utf-8")).hexdigest()[:20]


def read_sources(paths: list[str]) -> list[SceneRecord]:
    """All records of all files, or a SceneFileError naming every bad line (up to 10)."""
    records: list[SceneRecord] = []
    errors: list[SceneFileError] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json", ".txt", ".md"))
        elif path.exists():
            files = [path]
        else:
            raise SceneFileError(str(path), None, "no such file or folder")
        for f in files:
            try:
                records.extend(with_source(_read_file(f, errors), str(f.resolve())))
            except SceneFileError as exc:
                errors.append(exc)
    errors.extend(_id_conflicts(records))
    if errors:
        listed = "; ".join(str(e) for e in errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        first = errors[0]
        raise SceneFileError(first.path, first.line, f"{first.reason}. Nothing was ingested. All problems: {listed}{more}")
    return records


def with_source(records: list[SceneRecord], source: str | None) -> list[SceneRecord]:
    """Records given `source` where they name none, and each its position within its own source."""
    seen: dict[str | None, int] = {}
    for rec in records:
        if rec.source is None:
            rec.source = source
        if rec.source is not None and rec.position is None:
            rec.position = seen.get(rec.source, 0)
        seen[rec.source] = seen.get(rec.source, 0) + 1
    return records


def _id_conflicts(records: list[SceneRecord]) -> list[SceneFileError]:
    """An explicit id given to two different texts: the second would silently lose to the first."""
    first: dict[str, SceneRecord] = {}
    out = []
    for rec in records:
        if rec.id is None:
            continue
        seen = first.setdefault(rec.id, rec)
        if seen is not rec and (seen.text, seen.title) != (rec.text, rec.title):
            path, _, line = rec.origin.rpartition(":")
            out.append(SceneFileError(path or rec.origin, int(line) if line.isdigit() else None,
                                      f"id {rec.id!r} is already used at {seen.origin} for a different text; "
                                      "give each scene its own id (or drop \"id\" for content ids)"))
    return out


def _read_file(path: Path, errors: list[SceneFileError]) -> list[SceneRecord]:
    data = path.read_bytes()
    if path.suffix == ".jsonl":
        return list(_read_jsonl(path, data, errors))
    text = _decode(path, data)
    if path.suffix == ".json":
        return _read_corpus_json(path, text)
    return _chunk_text(path, text)


def _decode(path: Path, data: bytes, line: int | None = None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = line if line is not None else data[: exc.start].count(b"\n") + 1
        raise SceneFileError(str(path), at, f"invalid UTF-8 (byte 0x{data[exc.start]:02x})") from None


def _read_jsonl(path: Path, data: bytes, errors: list[SceneFileError]) -> Iterator[SceneRecord]:
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(_decode(path, raw, n))
            yield _record(obj, path, n)
        except SceneFileError as exc:
            errors.append(exc)
        except json.JSONDecodeError as exc:
            errors.append(SceneFileError(str(path), n, f"broken JSON ({exc.msg} at column {exc.colno})"))
        except RecursionError:
            errors.append(SceneFileError(str(path), n, TOO_DEEP))


def _record(obj: Any, path: Path, line: int | None) -> SceneRecord:
    if not isinstance(obj, dict):
        raise SceneFileError(str(path), line, f"expected an object with \"text\", got {type(obj).__name__}")
    text = obj.get("text", obj.get("paragraph_text"))
    if not isinstance(text, str) or not text.strip():
        raise SceneFileError(str(path), line, "record has no non-empty \"text\" string")
    if len(text) > MAX_SCENE_CHARS:
        raise SceneFileError(str(path), line, f"scene text is {len(text):,} chars, over {MAX_SCENE_CHARS:,}; split it")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise SceneFileError(str(path), line, "\"meta\" must be an object")
    sid, title, source = obj.get("id"), obj.get("title"), obj.get("source")
    if source is not None and (not isinstance(source, str) or not source.strip()):
        raise SceneFileError(str(path), line, "\"source\" must be a non-empty string (a document id)")
    return SceneRecord(text=text.strip(), title=str(title).strip() if title else None,
                       id=str(sid) if sid is not None else None, meta=meta,
                       origin=f"{path}:{line}" if line is not None else str(path),
                       source=source.strip() if source else None)


def _read_corpus_json(path: Path, text: str) -> list[SceneRecord]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SceneFileError(str(path), exc.lineno, f"broken JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise SceneFileError(str(path), None, TOO_DEEP) from None
    if isinstance(obj, dict):  # title -> [sentences]
        return [_record({"title": t, "text": " ".join(s) if isinstance(s, list) else s}, path, None)
                for t, s in obj.items()]
    if isinstance(obj, list):
        return [_record(item, path, None) for item in obj]
    raise SceneFileError(str(path), None, "expected a list of {title, text} or a dict title -> sentences")


def _chunk_text(path: Path, text: str) -> list[SceneRecord]:
    """Paragraphs packed into chunks of about CHUNK_CHARS; a markdown heading titles what follows."""
    title: str | None = path.stem
    records: list[SceneRecord] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            records.append(SceneRecord(text="\n".join(buf), title=title, origin=str(path)))
            buf.clear()

    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        heading = re.match(r"^#{1,6}\s+(.+)$", para.splitlines()[0])
        if heading:
            flush()
            title = heading.group(1).strip()
            para = "\n".join(para.splitlines()[1:]).strip()
            if not para:
                continue
        for piece in split_long(para, CHUNK_CHARS):
            if buf and sum(len(b) for b in buf) + len(piece) > CHUNK_CHARS:
                flush()
            buf.append(piece)
    flush()
    return records


def split_long(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` chars, cut after a sentence end, else at a space, else anywhere."""
    if len(text) <= limit:
        return [text]
    pieces, pos = [], 0
    while len(text) - pos > limit:
        end = pos + limit
        cut = max(text.rfind(mark, pos, end) for mark in (". ", "? ", "! ", "\n", "。"))
        if cut <= pos + limit // 2:
            cut = text.rfind(" ", pos, end)
        if cut <= pos + limit // 2:
            cut = end - 1
        piece = text[pos : cut + 1].strip()
        if piece:
            pieces.append(piece)
        pos = cut + 1
    rest = text[pos:].strip()
    return pieces + ([rest] if rest else [])
