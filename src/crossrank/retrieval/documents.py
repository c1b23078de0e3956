"""Read users' documents: a folder of .txt/.md files, or a .jsonl with id/title/text."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".md", ".markdown")


@dataclass
class Document:
    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def markdown_title(text: str) -> str:
    """The first ``# heading`` of a Markdown file, or ''."""
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


def read_folder(folder: Path) -> list[Document]:
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
    )
    if not files:
        raise ValueError(f"{folder} holds no .txt or .md files")
    documents = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        relative = path.relative_to(folder).as_posix()
        title = markdown_title(text) if path.suffix.lower() != ".txt" else ""
        documents.append(
            Document(relative, text, title or path.stem, {"path": str(path.resolve())})
        )
    return documents


def read_jsonl(path: Path) -> list[Document]:
    documents = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or "text" not in record:
                raise ValueError(f"{path}:{number}: expected an object with 'id' and 'text'")
            doc_id = record.pop("id", record.pop("_id", None))
            if doc_id is None:
                raise ValueError(f"{path}:{number}: the document has no 'id'")
            text, title = record.pop("text"), record.pop("title", "") or ""
            if not isinstance(text, str):
                raise ValueError(f"{path}:{number}: 'text' must be a string")
            documents.append(Document(str(doc_id), text, str(title), record))
    if not documents:
        raise ValueError(f"{path} holds no documents")
    return documents


def read_documents(source: str | Path) -> list[Document]:
    """Documents of a folder (recursively: .txt, .md) or of a .jsonl file."""
    path = Path(source).expanduser()
    if path.is_dir():
        documents = read_folder(path)
    elif path.is_file() and path.suffix == ".jsonl":
        documents = read_jsonl(path)
    elif path.exists():
        raise ValueError(f"{path}: give a folder of .txt/.md files or a .jsonl file")
    else:
        raise FileNotFoundError(f"no such file or folder: {path}")
    seen: set[str] = set()
    for document in documents:
        if document.id in seen:
            raise ValueError(f"{path}: document id {document.id!r} appears twice")
        seen.add(document.id)
    return documents
