"""Text corpora larger than memory, for ``crnn train``: a token cache.

``token_cache(paths, folder)`` reads UTF-8 text files (several files, or
folders of them) in two streaming passes of 128 KiB at a time — one to
find the vocabulary, one to write every character's id once to a flat file
(``uint8`` when the vocabulary has at most 256 symbols, else ``uint16``) —
and returns it as a read-only ``np.memmap``.  The cache is keyed by the
inputs' paths, sizes and modification times (and the character limit), so a
second run opens it at once and a changed file builds a new one.  Training
rows are then views into that memmap (``as_rows``), never a copy, and the
trainer reads only the rows of each batch: peak memory does not grow with
the corpus.
"""
import codecs
import hashlib
import json
import os
import secrets

import numpy as np

__all__ = ["CorpusError", "text_files", "token_cache"]

FORMAT = 1
# 128 KiB of text per read: the pieces (and their UTF-32 copies) then stay
# under glibc's mmap threshold and are reused in place.  With 4 MiB pieces
# the heap grew with the corpus (1.4 GB peak RSS on 2 GB of text, measured).
CHUNK_BYTES = 1 << 17


class CorpusError(ValueError):
    """A corpus that cannot be used (no text files, not UTF-8, binary...)."""


def text_files(paths):
    """The files of `paths` (files, or folders walked recursively in sorted
    order, hidden entries skipped), in a fixed order."""
    files = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            found = []
            for folder, subfolders, names in os.walk(path):
                subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
                found.extend(os.path.join(folder, name) for name in sorted(names)
                             if not name.startswith("."))
            found = [f for f in found if os.path.isfile(f) and os.path.getsize(f)]
            if not found:
                raise CorpusError(f"{path}: a folder with no text files in it "
                                  f"(expected UTF-8 text files)")
            files.extend(found)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise CorpusError(f"{path}: no such file or folder")
    return files


def _chunks(path, limit):
    """The text of file `path` in pieces of about CHUNK_BYTES, at most
    `limit` characters in all (None: no limit); CorpusError on binary or
    non-UTF-8 content."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as handle:
        while limit is None or limit > 0:
            raw = handle.read(CHUNK_BYTES)
            final = not raw
            nul = raw.find(b"\0")
            if nul >= 0:
                raise CorpusError(f"{path}: looks like a binary file (it holds NUL "
                                  f"bytes near byte {offset + nul}), expected UTF-8 "
                                  f"text")
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as error:
                raise CorpusError(f"{path}: is not UTF-8 text ({error.reason} near "
                                  f"byte {offset + error.start})") from None
            offset += len(raw)
            if limit is not None:
                text = text[:limit]
                limit -= len(text)
            if text:
                yield text
            if final:
                break


def _codes(text):
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _key(files, max_chars):
    stamp = [(os.path.abspath(f), os.stat(f).st_size, os.stat(f).st_mtime_ns)
             for f in files]
    text = json.dumps([FORMAT, max_chars, stamp])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def token_cache(paths, folder, max_chars=None):
    """(ids, vocabulary, files): the token ids of the corpus as a read-only
    np.memmap, its sorted vocabulary (a list of characters) and the files
    read.  Builds the cache in `folder` unless a valid one is there."""
    files = text_files(paths)
    if not files:
        raise CorpusError("no text files given")
    os.makedirs(folder, exist_ok=True)
    key = _key(files, max_chars)
    meta_path = os.path.join(folder, f"{key}.json")
    data_path = os.path.join(folder, f"{key}.tokens")
    meta = _read_meta(meta_path, data_path)
    if meta is None:
        meta = _build(files, max_chars, meta_path, data_path)
    dtype = np.dtype(meta["dtype"])
    if meta["count"] == 0:
        raise CorpusError(f"{', '.join(files[:3])}: no text in them")
    ids = np.memmap(data_path, dtype=dtype, mode="r", shape=(meta["count"],))
    return ids, list(meta["vocabulary"]), files


def _read_meta(meta_path, data_path):
    try:
        with open(meta_path, encoding="utf-8") as handle:
            meta = json.load(handle)
        size = os.path.getsize(data_path)
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT or \
            size != meta["count"] * np.dtype(meta["dtype"]).itemsize:
        return None
    return meta


def _build(files, max_chars, meta_path, data_path):
    # pass 1: the vocabulary (a count per code point: linear time)
    present = np.zeros(0, dtype=bool)
    left = max_chars
    for path in files:
        for text in _chunks(path, left):
            counts = np.bincount(_codes(text))
            if len(counts) > len(present):
                present = np.concatenate([present, np.zeros(len(counts) - len(present),
                                                             dtype=bool)])
            present[:len(counts)] |= counts > 0
            if left is not None:
                left -= len(text)
        if left is not None and left <= 0:
            break
    seen = np.flatnonzero(present)
    if len(seen) > 65536:
        raise CorpusError(f"the corpus has {len(seen)} different characters; the "
                          f"token cache holds at most 65536")
    dtype = np.uint8 if len(seen) <= 256 else np.uint16
    table = np.zeros(len(present), dtype=dtype)      # code point -> id
    table[seen] = np.arange(len(seen), dtype=dtype)
    # pass 2: every character's id, written once (plain writes, so that the
    # pages never count against this process's memory)
    temporary = f"{data_path}.{secrets.token_hex(4)}.tmp"
    count = 0
    left = max_chars
    try:
        with open(temporary, "wb") as out:
            for path in files:
                for text in _chunks(path, left):
                    ids = table[_codes(text)]
                    out.write(ids.tobytes())
                    count += len(ids)
                    if left is not None:
                        left -= len(text)
                if left is not None and left <= 0:
                    break
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, data_path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    meta = {"format": FORMAT, "count": count, "dtype": np.dtype(dtype).name,
            "vocabulary": "".join(chr(c) for c in seen),
            "files": len(files)}
    temporary = f"{meta_path}.{secrets.token_hex(4)}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(meta, handle)
    os.replace(temporary, meta_path)
    return meta
