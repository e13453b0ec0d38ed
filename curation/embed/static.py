"""A static (token-lookup) embedder distilled on this machine from the packaged MiniLM.

``embed: {model: static-minilm}`` trades some quality for a large CPU speed-up: a text's vector
is the mean of per-token vectors looked up in a table, so embedding is tokenisation plus one
sparse matrix product (:func:`mean_token_vectors`): no transformer, and no torch, at run time.
The table is distilled from the packaged all-MiniLM-L6-v2 with the model2vec recipe, without
downloads and without the ``model2vec`` package:

1. **Token vectors.** Every vocabulary id ``t`` is run through MiniLM on its own, as the
   sequence ``[CLS] t [SEP]``; the token's vector is the mean of the three output hidden states
   (model2vec's mean pooling over the attention mask). All sequences have length 3, so batches
   need no padding. ``[unusedN]`` ids (never produced by the tokenizer) get zero vectors and stay
   out of the PCA.
2. **PCA** to ``pca_dims`` (default 256) with scikit-learn (``svd_solver="full"``, as model2vec),
   fitted on the distilled rows.
3. **Token weights** (``weighting``; folded into the rows, so the model is a plain table):

   * ``"sif"`` (default): smooth inverse frequency, ``w(t) = a / (a + p(t))``, ``p`` a Zipf
     distribution over frequency rank, ``p(r) = (1 / (r + 2)) / sum_r' 1 / (r' + 2)``, and the
     token id taken as its rank - model2vec's default since 0.4 (its ``sif_coefficient``).
     The vocabulary has no counts, so the id is a proxy: BERT's WordPiece ids 1996 onwards
     ("the", "of", "and", ...) are in corpus-frequency order; below them sit the special tokens
     and ~1000 single characters and punctuation marks (code-point order). We use
     ``a = 1e-3``, not model2vec's ``1e-4``. With ``1e-3`` the weight is 0.50 for ``[UNK]``
     (id 100; frequent in texts with emoji or rare scripts) and the other special tokens, 0.91-0.95
     over the single characters and 0.95-1 over words: it keeps unknown characters from
     dominating a text's mean and otherwise leaves the table nearly unweighted. Model2vec's
     ``1e-4`` also damps frequent words (0.66 for "the", 0.50-0.66 over the characters). Measured
     by ``bench/embedders.py`` (nearest neighbour shares the label; 20k WordNet glosses / 10k
     evals prompts; MiniLM itself 0.523 / 0.954): ``sif`` 1e-3 0.519 / 0.931, no weighting
     0.521 / 0.925, ``log-rank`` 0.510 / 0.927, ``sif`` 1e-4 0.501 / 0.927 - frequency weighting
     by id rank buys little here (PCA centring already removes the direction all tokens share;
     our reading), and model2vec's coefficient costs 2 points on the glosses.
   * ``"log-rank"``: ``w(t) = log(1 + id)`` (model2vec's original ``apply_zipf``).
   * ``"none"``: no weighting.

The distilled model is cached on disk under ``<cache dir>/static-minilm/<key>/`` where ``key`` is
(the first 32 hex digits of) the sha256 of the recipe version, the base model's files (contents)
and the distillation settings; it is built once per machine
(under a file lock, into a temporary directory renamed into place, so a crash leaves nothing
half-built). The directory is an ordinary sentence-transformers model (``modules.json`` +
``StaticEmbedding`` files); ``distill.json`` records the settings, the base hash and the
**content hash** of the distilled table and tokenizer. That hash is part of the embedder ``id``,
so the embedding cache never mixes vectors of two different tables. The build is deterministic:
the same base files and settings give the same bytes (and hash) on a machine; a different CPU or
library version may differ in the last float bits, which only changes the hash.

Cache directory, first match wins: the ``cache_dir`` argument, ``$CURATION_MODEL_CACHE``,
``$XDG_CACHE_HOME/curation``, ``~/.cache/curation``; models live in its ``static-minilm/``
sub-directory.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from curation.embed.base import Embedder
from curation.embed.sentence_transformers import resolve_model_path
from curation.progress import progress

RECIPE_VERSION = 1  # bump when the distillation code changes what it produces
WEIGHTINGS = ("sif", "log-rank", "none")
MODEL_FILES = ("model.safetensors", "tokenizer.json")  # the files the content hash covers
_UNUSED = re.compile(r"^\[unused\d+\]$")


@dataclass(frozen=True)
class DistillSettings:
    """What the distilled table depends on besides the base model's files (all in the cache key).

    Attributes:
        base: the base model, a packaged name or a local sentence-transformers directory.
        pca_dims: output dimension (PCA); at most the base model's dimension.
        weighting: ``"sif"``, ``"log-rank"`` or ``"none"`` (see the module docstring).
        sif_coefficient: ``a`` in the SIF weight ``a / (a + p)``.
        batch_size: token sequences per forward pass while distilling.
        vocab_limit: distil only ids below this (the rest get zero vectors); for tests and quick
            experiments, None (all ids) otherwise.
    """

    base: str = "all-MiniLM-L6-v2"
    pca_dims: int = 256
    weighting: str = "sif"
    sif_coefficient: float = 1e-3
    batch_size: int = 1024
    vocab_limit: int | None = None

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}; got {self.weighting!r}")
        if self.pca_dims < 1 or self.batch_size < 1 or (self.vocab_limit is not None and self.vocab_limit < 2):
            raise ValueError("pca_dims and batch_size must be >= 1 and vocab_limit >= 2 (or None)")


def default_cache_dir() -> Path:
    """``$CURATION_MODEL_CACHE``, else ``$XDG_CACHE_HOME/curation``, else ``~/.cache/curation``."""
    if os.environ.get("CURATION_MODEL_CACHE"):
        return Path(os.environ["CURATION_MODEL_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "curation"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=8)
def base_model_sha256(path: str, memo_dir: str | None = None) -> str:
    """sha256 over every file of a model directory: sorted relative paths and their contents.

    With ``memo_dir``, a directory hashed before is not read again: the hash is remembered in
    ``<memo_dir>/base-sha256.json`` under the files' relative paths, sizes and modification
    times (the test git's index uses), which saves every build ~0.3 s of reading MiniLM's 90 MB.
    A file rewritten in place with the same size and the same modification time is the one
    change this misses. The memo is replaced whole (written aside, renamed), so concurrent builds
    at worst each write their own correct entry.
    """
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    stamp = None
    if memo_dir is not None:
        stats = [(f.relative_to(root).as_posix(), f.stat()) for f in files]
        stamp = hashlib.sha256(json.dumps([str(root.resolve())] + [[n, s.st_size, s.st_mtime_ns] for n, s in stats])
                               .encode()).hexdigest()
        memo = _read_memo(Path(memo_dir) / "base-sha256.json")
        if stamp in memo:
            return memo[stamp]
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root).as_posix()}\0{_file_sha256(f)}\n".encode())
    sha = h.hexdigest()
    if memo_dir is not None:
        memo_path = Path(memo_dir) / "base-sha256.json"
        tmp = memo_path.with_name(f".{memo_path.name}.{uuid.uuid4().hex}")
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({**_read_memo(memo_path), stamp: sha}))
            os.replace(tmp, memo_path)
        except OSError:  # a read-only cache only loses the shortcut
            tmp.unlink(missing_ok=True)
    return sha


def _read_memo(path: Path) -> dict[str, str]:
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or cut short by a crash: start afresh
        return {}
    return memo if isinstance(memo, dict) else {}


def distill_key(base_sha: str, settings: DistillSettings) -> str:
    """The cache key: sha256 of the recipe version, the base model's files and the settings.

    The base is identified by its file hash only, so the same files reached by another name or
    path share one distilled model.
    """
    spec = {"recipe": RECIPE_VERSION, "base_sha256": base_sha,
            **{k: v for k, v in asdict(settings).items() if k != "base"}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def content_sha256(model_dir: str | os.PathLike) -> str:
    """The distilled model's hash: sha256 over its table and tokenizer files (names + contents)."""
    h = hashlib.sha256()
    for name in MODEL_FILES:
        h.update(f"{name}\0{_file_sha256(Path(model_dir) / name)}\n".encode())
    return h.hexdigest()


def token_weights(n: int, weighting: str, sif_coefficient: float = 1e-3) -> np.ndarray:
    """Per-id weights (float64, length ``n``), the id taken as the frequency rank.

    >>> w = token_weights(30522, "sif")
    >>> bool(w[0] < 0.05 < 0.9 < w[-1] < 1)
    True
    """
    rank = np.arange(n, dtype=np.float64)
    if weighting == "none":
        return np.ones(n)
    if weighting == "log-rank":
        return np.log1p(rank)
    p = 1.0 / (rank + 2.0)
    p /= p.sum()
    return sif_coefficient / (sif_coefficient + p)


def token_vectors(base_path: str, settings: DistillSettings) -> tuple[object, int, np.ndarray, np.ndarray]:
    """Step 1: ``(tokenizer, vocabulary size, distilled ids, their mean-pooled MiniLM outputs)``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tokenizer = Tokenizer.from_file(str(Path(base_path) / "tokenizer.json"))
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    n = max(vocab.values()) + 1
    bos, eos = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if bos is None or eos is None:
        raise ValueError(f"{base_path}: the static distillation expects a BERT-style [CLS]/[SEP] tokenizer")
    limit = min(n, settings.vocab_limit or n)
    unused = {i for t, i in vocab.items() if _UNUSED.match(t)}
    ids = np.array([i for i in range(limit) if i not in unused], dtype=np.int64)

    model = AutoModel.from_pretrained(base_path).eval()
    dim = int(model.config.hidden_size)
    if settings.pca_dims > dim:
        raise ValueError(f"pca_dims={settings.pca_dims} is larger than the base model's dimension {dim}")
    out = np.empty((len(ids), dim), dtype=np.float32)
    # the one slow step of a first run (~20 s on 2 cores): say so, once per model and machine
    with torch.inference_mode(), progress(len(ids), f"distilling static-minilm from {settings.base} (once)",
                                          unit="tokens") as bar:
        for s in range(0, len(ids), settings.batch_size):
            b = torch.from_numpy(ids[s : s + settings.batch_size])
            x = torch.stack([torch.full_like(b, bos), b, torch.full_like(b, eos)], dim=1)
            hidden = model(input_ids=x, attention_mask=torch.ones_like(x),
                           token_type_ids=torch.zeros_like(x)).last_hidden_state
            out[s : s + len(b)] = hidden.mean(dim=1).numpy()
            bar(len(b))
    tokenizer.no_padding()
    tokenizer.no_truncation()  # the embedder sets truncation from max_seq_length at load time
    return tokenizer, n, ids, out


def reduce_and_weight(vectors: np.ndarray, ids: np.ndarray, n: int, settings: DistillSettings) -> np.ndarray:
    """Steps 2 and 3: PCA, token weights, zero rows for ids not distilled; float32 (n, pca_dims)."""
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    # PCA also centres the token vectors (removes the direction all of them share), as model2vec's
    # does. One BLAS thread: the same bits whatever the machine's thread settings, and on a busy
    # machine several times faster than OpenBLAS's spinning threads.
    with threadpool_limits(limits=1, user_api="blas"):
        reduced = PCA(n_components=settings.pca_dims, svd_solver="full").fit_transform(vectors.astype(np.float64))
    reduced *= token_weights(n, settings.weighting, settings.sif_coefficient)[ids, None]
    table = np.zeros((n, settings.pca_dims), dtype=np.float32)
    table[ids] = reduced
    return table


def distill(base_path: str, settings: DistillSettings) -> tuple[np.ndarray, object]:
    """Distil the static table: ``(weights (vocab, pca_dims) float32, tokenizers.Tokenizer)``.

    Deterministic for a given machine and library stack: fixed batch composition and no padding
    in the forward passes, float64 PCA on one BLAS thread, one rounding to float32 at the end.
    """
    tokenizer, n, ids, vectors = token_vectors(base_path, settings)
    return reduce_and_weight(vectors, ids, n, settings), tokenizer


def as_sentence_transformer(tokenizer, table: np.ndarray, *, max_seq_length: int | None = None,
                            device: str = "cpu", base: str | None = None):
    """A ``SentenceTransformer([StaticEmbedding(tokenizer, table)])``, truncating at ``max_seq_length`` tokens."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    if max_seq_length:
        tokenizer.enable_truncation(max_length=int(max_seq_length))
    else:
        tokenizer.no_truncation()
    module = StaticEmbedding(tokenizer, embedding_weights=np.ascontiguousarray(table, dtype=np.float32),
                             base_model=base)
    model = SentenceTransformer(modules=[module], device=device)
    model.eval()
    return model


_MODULES_JSON = [{"idx": 0, "name": "0", "path": "",
                  "type": "sentence_transformers.sentence_transformer.modules.static_embedding.StaticEmbedding"}]


def write_model(out_dir: Path, table: np.ndarray, tokenizer, info: dict) -> str:
    """Write a sentence-transformers ``StaticEmbedding`` directory; returns its content hash."""
    from safetensors.numpy import save_file

    out_dir.mkdir(parents=True)
    save_file({"embedding.weight": np.ascontiguousarray(table, dtype=np.float32)}, str(out_dir / "model.safetensors"))
    tokenizer.save(str(out_dir / "tokenizer.json"))
    (out_dir / "modules.json").write_text(json.dumps(_MODULES_JSON, indent=2) + "\n")
    (out_dir / "config_sentence_transformers.json").write_text(
        json.dumps({"model_type": "SentenceTransformer", "similarity_fn_name": "cosine"}, indent=2) + "\n")
    sha = content_sha256(out_dir)
    (out_dir / "distill.json").write_text(json.dumps({**info, "sha256": sha}, indent=2, sort_keys=True) + "\n")
    return sha


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (no-op where ``fcntl`` is missing: the rename still keeps builds atomic)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_distilled(settings: DistillSettings, cache_dir: str | os.PathLike) -> Path:
    """The distilled model's directory for ``settings``, building it first if the cache lacks it."""
    base_path = resolve_model_path(settings.base)
    base_sha = base_model_sha256(base_path, str(cache_dir))
    key = distill_key(base_sha, settings)
    root = Path(cache_dir)
    final = root / key[:32]
    if (final / "distill.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / f".{key[:32]}.lock"):
        if (final / "distill.json").is_file():  # another process built it while we waited
            return final
        t0 = time.perf_counter()
        table, tokenizer = distill(base_path, settings)
        info = {"recipe": RECIPE_VERSION, "key": key, "base_sha256": base_sha, "settings": asdict(settings),
                "dim": int(table.shape[1]), "vocab": int(table.shape[0]),
                "build_seconds": round(time.perf_counter() - t0, 2)}  # not part of the content hash
        tmp = root / f".tmp-{key[:32]}-{uuid.uuid4().hex}"
        try:
            write_model(tmp, table, tokenizer, info)
            with contextlib.suppress(OSError):  # lost a race without the lock: keep the first
                os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    if not (final / "distill.json").is_file():
        raise RuntimeError(f"could not create the distilled model at {final}: a stale non-model directory is in the way")
    return final


def read_info(model_dir: str | os.PathLike) -> dict:
    """``distill.json`` of a distilled model directory."""
    return json.loads((Path(model_dir) / "distill.json").read_text())


@functools.lru_cache(maxsize=4)
def _load_model(model_dir: str, max_seq_length: int | None):
    """The distilled directory's tokenizer (truncating at ``max_seq_length`` tokens) and token
    table, its content hash checked."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    recorded = read_info(model_dir)["sha256"]
    actual = content_sha256(model_dir)
    if actual != recorded:
        raise RuntimeError(f"distilled model {model_dir} is corrupt (content sha256 {actual[:16]} != recorded "
                           f"{recorded[:16]}); delete the directory and it is rebuilt on next use")
    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    if max_seq_length:
        tokenizer.enable_truncation(max_length=int(max_seq_length))
    else:
        tokenizer.no_truncation()
    table = load_file(str(Path(model_dir) / "model.safetensors"))["embedding.weight"]
    return tokenizer, np.ascontiguousarray(table, dtype=np.float32)


def mean_token_vectors(tokenizer, table: np.ndarray, texts: Sequence[str], *, normalize: bool) -> np.ndarray:
    """Each text's vector: the mean of its tokens' rows of ``table`` (no special tokens), then
    L2-normalised (``x / max(|x|, 1e-12)``) if ``normalize``; a text without tokens gets zeros.

    What sentence-transformers' ``StaticEmbedding`` computes (an ``EmbeddingBag`` in mean mode),
    as one sparse product ``W @ table`` with ``W[i, t] = count of t in text i / len(text i)``: no
    torch and no sentence-transformers at run time, so embedding starts in a tenth of a second
    instead of seconds and the process stays about 0.5 GB smaller (their imports). The sums run
    in another order than torch's, so a vector may differ from ``StaticEmbedding``'s in the last
    float bits (at most ~2e-7 per coordinate; a test compares the two).
    """
    import scipy.sparse as sp

    # encode_batch_fast skips the character offsets we never read: the same ids, ~20% sooner
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    ids = [e.ids for e in encode(list(texts), add_special_tokens=False)]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(indptr[-1]))
    weights = np.repeat((1.0 / np.maximum(lengths, 1)).astype(np.float32), lengths)
    W = sp.csr_matrix((weights, tokens, indptr), shape=(len(ids), len(table)))
    X = np.ascontiguousarray(W @ table, dtype=np.float32)
    if normalize:
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return X


class StaticEmbedder(Embedder, name="static-minilm"):
    """Mean of distilled MiniLM token vectors (``embed.model: static-minilm``).

    Args:
        pca_dims: vector dimension (``static-minilm:<dims>`` in a recipe).
        batch_size: texts per ``encode`` batch (only speed depends on it).
        normalize: L2-normalise the vectors.
        max_seq_length: use only the first this many tokens of a text (None: all of them).
        cache_dir: where distilled models live (``<cache_dir>/static-minilm/<key>``); default
            :func:`default_cache_dir`. Resolved when the embedder is made, so Ray workers on the
            same machine find the model the driver built.
        base, weighting, sif_coefficient, vocab_limit: distillation settings (see
            :class:`DistillSettings`).
        device: accepted like the other embedders' and ignored: a table lookup runs on the CPU.

    The first use on a machine distils the model (about 10 s to a few minutes on a CPU, once);
    ``id`` needs the distilled model's hash, so reading ``id`` builds it if it is missing.
    Texts with no tokens (empty strings) get the zero vector.

    >>> emb = StaticEmbedder()                              # doctest: +SKIP
    >>> emb.embed(["hello world"]).shape                    # doctest: +SKIP
    (1, 256)
    """

    light = True  # a mean of looked-up token vectors: cheaper than shipping the text to a Ray actor
    batch_invariant = True  # each text on its own: no padding, nothing shared within a chunk
    # the tokenizer and the sparse product release the GIL; the ids' conversion to arrays does
    # not: two chunks at once keep both cores busy (300k texts through embed_texts with the
    # cache: 7.4-7.9 s one chunk after another, 5.5-6.0 s two at once; docs/embedders.md)
    parallel_chunks = 2

    @classmethod
    def from_model(cls, model: str, argument: str | None, **settings) -> StaticEmbedder:
        settings.pop("device", None)  # a table lookup: the CPU is the right place for it
        if argument:
            settings["pca_dims"] = int(argument)
        return cls(**{k: v for k, v in settings.items() if v is not None or k == "max_seq_length"})

    def __init__(
        self,
        pca_dims: int = 256,
        *,
        batch_size: int = 1024,
        normalize: bool = True,
        max_seq_length: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        base: str = "all-MiniLM-L6-v2",
        weighting: str = "sif",
        sif_coefficient: float = 1e-3,
        vocab_limit: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.settings = DistillSettings(base=base, pca_dims=pca_dims, weighting=weighting,
                                        sif_coefficient=sif_coefficient, vocab_limit=vocab_limit)
        self.batch_size = batch_size
        self.normalize = normalize
        self.max_seq_length = max_seq_length
        self.cache_dir = str((Path(cache_dir).expanduser() if cache_dir else default_cache_dir()).resolve()
                             / "static-minilm")
        self.device = device
        self._sha: str | None = None  # the distilled model's hash, once known (travels in the pickle)

    @property
    def model_dir(self) -> Path:
        """The distilled model's directory (built on first access)."""
        return ensure_distilled(self.settings, self.cache_dir)

    @property
    def model_sha256(self) -> str:
        """The distilled model's content hash (builds the model if the cache lacks it)."""
        if self._sha is None:
            self._sha = read_info(self.model_dir)["sha256"]
        return self._sha

    @property
    def id(self) -> str:
        return (f"static:minilm@{self.model_sha256[:16]}:dim={self.settings.pca_dims}"
                f":seq={self.max_seq_length or 'all'}:norm={int(self.normalize)}")

    def _model(self):
        model_dir = self.model_dir
        if self._sha is not None and read_info(model_dir)["sha256"] != self._sha:
            raise RuntimeError(
                f"the distilled model at {model_dir} (sha256 {read_info(model_dir)['sha256'][:16]}) is not the one "
                f"this embedder's id names ({self._sha[:16]}): it was built separately here (another machine "
                "or library version). Point every worker at the driver's model cache (cache_dir or "
                "$CURATION_MODEL_CACHE on a shared file system), or copy the driver's model directory here.")
        return _load_model(str(model_dir), self.max_seq_length)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        tokenizer, table = self._model()
        texts = list(texts)
        out = np.zeros((len(texts), self.settings.pca_dims), dtype=np.float32)
        for s in range(0, len(texts), self.batch_size):
            out[s : s + self.batch_size] = mean_token_vectors(tokenizer, table, texts[s : s + self.batch_size],
                                                              normalize=self.normalize)
        return out
