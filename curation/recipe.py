"""The recipe: a validated pydantic model loaded from YAML.

Bad or unknown fields fail before any work with one line per problem, naming the field, the
value and what is allowed. ``overrides`` (``--set a.b=c`` on the CLI) are applied to the raw
mapping before validation, so they are validated like everything else.

Example::

    name: reviews-mix
    seed: 1
    sources:
      - {name: reviews, kind: files, path: data/reviews.parquet, id: doc_id, text: text, label: label}
    groups: [lang]
    embed: {model: all-MiniLM-L6-v2}
    cluster: {k: 32}
    select: {method: stratified, budget: 1200, mode: equal}
    output: {root: out}
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from curation.exceptions import CurationError, RecipeError
from curation.secrets import check_no_literal_password


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# the recipe keys each built-in connector kind reads (other kinds' keys are refused for it);
# plugin kinds read ``options``
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "files": ("path", "format", "storage_options"),
    "huggingface": ("path", "split", "config", "storage_options"),
    "sql": ("url", "table", "query", "order_by", "page_size", "updated_at"),
}
CAST_TYPES = ("string", "int64", "float64", "bool", "date", "datetime")


class SourceConfig(_Strict):
    """One input source. Exactly one of ``text`` or ``features`` is given.

    Which keys apply depends on ``kind`` (:data:`KIND_FIELDS`): ``files`` reads ``path`` (local
    or any fsspec URL: ``s3://``, ``gs://``, ``az://``, ``hf://``, ``file://``), ``huggingface``
    reads a ``save_to_disk`` directory or a Hub-layout Parquet folder at ``path``, ``sql`` reads
    ``table`` or a read-only ``query`` from the SQLAlchemy ``url``.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the source's name (report column `source`)")
    kind: str = Field(default="files", description="the connector: `files` (Parquet, JSONL, CSV; local or fsspec "
                      "URLs), `sql`, `huggingface`, or a plugin's kind (entry points curation.connectors)")
    path: str | list[str] | None = Field(default=None, description="files: a file, a glob, a directory or a list "
                                         "of them, local or an fsspec URL (s3://bucket/prefix/*.parquet); "
                                         "huggingface: a save_to_disk directory or a Hub-layout Parquet folder")
    format: str | None = Field(default=None, description="files: parquet, jsonl or csv (default: from the file "
                               "extension)")
    storage_options: dict[str, Any] | None = Field(default=None, description="files, huggingface: fsspec storage "
                                                   "options (e.g. {endpoint_url: http://127.0.0.1:9000}); string "
                                                   "values may use ${NAME}; credentials best come from the "
                                                   "environment (AWS_ACCESS_KEY_ID, ...)")
    url: str | None = Field(default=None, description="sql: a SQLAlchemy URL, the password as ${NAME} "
                            "(postgresql://reader:${DB_PASSWORD}@host:5432/db, sqlite:///path.db)")
    table: str | None = Field(default=None, description="sql: the table to read (or give `query`)")
    query: str | None = Field(default=None, description="sql: a read-only SELECT (or give `table`)")
    order_by: str | None = Field(default=None, description="sql: the column that orders rows stably across pages "
                                 "(default: the id column)")
    page_size: int = Field(default=10_000, gt=0, description="sql: rows fetched per page")
    updated_at: str | None = Field(default=None, description="sql: a last-modified column; its maximum and the "
                                   "row count fingerprint the source (default: the row count and a hash of "
                                   "the rows' ids)")
    split: str | None = Field(default=None, description="huggingface: the split to read (default: train, or the "
                              "only split)")
    config: str | None = Field(default=None, description="huggingface: the configuration (subset) of a "
                               "Hub-layout folder (default: the only or the default one)")
    options: dict[str, Any] | None = Field(default=None, description="a plugin connector's own settings")
    id: str | None = Field(default=None, description="the id column (default: sha256 of the content; exact "
                           "duplicates are then dropped)")
    text: str | None = Field(default=None, description="the text column (a text source); it must hold strings")
    features: list[str] | None = Field(default=None, description="feature columns (a tabular source): numbers "
                                       "standardised, everything else one-hot encoded")
    label: str | None = Field(default=None, description="the label column (needed by influence, knn-shapley, "
                              "valuation, group-adaptive and kmq-iterative's default feedback)")
    cast: dict[str, str] | None = Field(default=None, description="column types to read as, {column: "
                                        + " | ".join(CAST_TYPES) + "}: a declared column is cast in every file "
                                        "(a value that cannot be cast skips its row); undeclared columns must "
                                        "have one type across a source's files")
    limit: int | None = Field(default=None, gt=0, description="read at most this many rows (debugging)")

    @model_validator(mode="after")
    def _text_xor_features(self) -> SourceConfig:
        if (self.text is None) == (self.features is None):
            raise ValueError("give exactly one of `text` (a text column) or `features` (a list of feature columns)")
        if self.features is not None and not self.features:
            raise ValueError("`features` must name at least one column")
        return self

    @model_validator(mode="after")
    def _keys_of_its_kind(self) -> SourceConfig:
        mine = KIND_FIELDS.get(self.kind)
        if mine is None:  # a plugin kind: its settings are in `options`
            return self
        for kind, keys in KIND_FIELDS.items():
            for key in keys:
                # compared with the default, not "was it given": a dumped recipe gives every key
                if key not in mine and getattr(self, key) != type(self).model_fields[key].default:
                    raise ValueError(f"`{key}` is a key of kind {kind!r}, not of kind {self.kind!r}")
        if self.options is not None:
            raise ValueError(f"`options` is for plugin connectors; kind {self.kind!r} does not read it")
        if self.kind in ("files", "huggingface") and self.path is None:
            raise ValueError(f"kind {self.kind!r} needs `path`")
        if self.kind == "sql":
            if self.url is None:
                raise ValueError("kind 'sql' needs `url` (a SQLAlchemy URL, e.g. postgresql://user:${PW}@host/db)")
            if (self.table is None) == (self.query is None):
                raise ValueError("kind 'sql' needs exactly one of `table` or `query`")
        return self

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str | None) -> str | None:
        if v is not None and v not in ("parquet", "jsonl", "csv"):
            raise ValueError(f"format must be one of 'parquet', 'jsonl', 'csv'; got {v!r}")
        return v

    @field_validator("cast")
    @classmethod
    def _known_cast(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for col, t in (v or {}).items():
            if t not in CAST_TYPES:
                raise ValueError(f"cast.{col}: {t!r} is not a type; use one of {', '.join(CAST_TYPES)}")
        return v

    @field_validator("path", "url")
    @classmethod
    def _no_literal_password(cls, v: str | list[str] | None) -> str | list[str] | None:
        for p in [] if v is None else [v] if isinstance(v, str) else v:
            check_no_literal_password(p)
        return v


class EmbedConfig(_Strict):
    """Text embedder settings (tabular sources use the feature encoder instead)."""

    model: str = Field(default="all-MiniLM-L6-v2", description=(
        "the embedder: the packaged MiniLM (all-MiniLM-L6-v2), a local sentence-transformers directory, "
        "static-minilm[:<dims>] (distilled from MiniLM on first use, 100x+ faster), hashing[:<dim>] (no model), "
        "or <family>:<argument> of an embedder plugin (entry points curation.embedders)"))
    batch_size: int | None = Field(default=None, gt=0, description="texts per forward pass (default: the "
                                   "embedder's own: 64 for a transformer, 1024 for static-minilm)")
    normalize: bool = Field(default=True, description="unit-length vectors (then clustering is spherical)")
    max_seq_length: int | None = Field(default=None, gt=0, description="truncate inputs to this many tokens "
                                       "(default: the model's)")
    chunk_size: int = Field(default=1024, gt=0, description="texts per Ray task")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="where a transformer embedder "
                                                   "runs: cuda when a GPU is there (auto), or forced; on Ray, "
                                                   "a cuda actor asks for one GPU")
    actors: int | None = Field(default=None, gt=0, description="Ray embedding actors (default: cpus // threads)")
    threads_per_actor: int | None = Field(default=None, gt=0, description="torch threads per actor (default: all cpus)")
    cache_dir: str | None = Field(default=None, description="the per-text embedding cache "
                                  "(default: <output.root>/.cache/embeddings)")


class ClusterConfig(_Strict):
    """``k: auto`` picks k from ``k_grid`` by sampled silhouette score."""

    k: int | Literal["auto"] = Field(default=32, description="faiss k-means clusters (at most the pool size), or "
                                     "`auto`: the k of k_grid with the best sampled silhouette")
    k_grid: list[int] = Field(default=[8, 16, 32, 64, 128], description="the candidates of k: auto")
    silhouette_sample: int = Field(default=2000, ge=10, description="points the silhouette of k: auto is computed on")
    niter: int = Field(default=20, gt=0, description="Lloyd iterations")
    spherical: bool | None = Field(default=None, description="cosine k-means (default: true for normalised text "
                                   "vectors)")
    max_points_per_centroid: int = Field(default=256, gt=0, description="the fit samples at most k x this many "
                                         "points; then every item is assigned")

    @field_validator("k")
    @classmethod
    def _positive_k(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v <= 0:
            raise ValueError(f"k must be a positive int or 'auto'; got {v}")
        return v


def _select_section(value: Any) -> Any:
    from curation.select.base import validate_select_section

    try:
        return validate_select_section(value)
    except ValidationError as exc:
        raise ValueError(_errors_in_one_line(exc)) from None


class _SelectSchema:
    """The ``select`` section's JSON Schema: one alternative per known selector (made on demand,
    so selectors from plugins are in it)."""

    @classmethod
    def __get_pydantic_json_schema__(cls, _core_schema: Any, _handler: Any) -> dict[str, Any]:
        from curation.select.base import select_section_schema

        return select_section_schema()


#: The ``select`` section: typed per method (``method`` picks the selector's parameter model,
#: :meth:`curation.select.base.Selector.params_model`); unknown methods and keys fail with one line.
SelectConfig = Annotated[Any, PlainValidator(_select_section), _SelectSchema]


class HoldoutConfig(_Strict):
    """A held-out set of labelled rows: ``{fraction: 0.1}`` or ``{path: ref.jsonl}``.

    ``fraction`` draws that share of the pool (seeded by the recipe's seed; stratified by label
    when the source has labels, and every label keeps at least one row in the pool); the rows
    are kept out of selection and listed in the report. ``path`` reads a separate file with the
    first source's column settings (``text``/``features``, ``label``, ``id``); when ids are
    content hashes, pool rows identical to a held-out row are dropped from the pool.
    """

    fraction: float | None = Field(default=None, gt=0, lt=1, description="hold out this share of the pool (seeded, "
                                   "stratified by label x group)")
    path: str | list[str] | None = Field(default=None, description="or read the held-out rows from this file "
                                         "(with the first source's columns)")
    format: str | None = Field(default=None, description="the file's format (default: from its extension)")

    @field_validator("path")
    @classmethod
    def _no_literal_password(cls, v: str | list[str] | None) -> str | list[str] | None:
        for p in [] if v is None else [v] if isinstance(v, str) else v:
            check_no_literal_password(p)
        return v

    @model_validator(mode="after")
    def _fraction_xor_path(self) -> HoldoutConfig:
        if (self.fraction is None) == (self.path is None):
            raise ValueError("give exactly one of `fraction` (a share of the pool, e.g. 0.1) or `path` (a file)")
        if self.format is not None and self.path is None:
            raise ValueError("`format` applies only with `path`")
        return self


def _errors_in_one_line(exc: ValidationError) -> str:
    """A nested section's validation errors as one message (``key: problem; key: problem``)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key for this method"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


@functools.cache
def _value_section_model(method_cls: type) -> type[BaseModel]:
    """The method's settings plus ``validation`` (the held-out set valuation is measured on)."""
    return create_model(f"{method_cls.__name__}Section", __base__=method_cls, __doc__=method_cls.__doc__,
                        validation=(HoldoutConfig | None, Field(default=None, description=(
                            "the held-out labelled rows values are measured on (default: the recipe's `reference`)"))))


def _value_section(value: Any) -> Any:
    from curation.value.pool import ValueMethod

    if isinstance(value, ValueMethod):
        return value
    if not isinstance(value, dict):
        raise ValueError("value is a mapping, e.g. {method: knn-shapley, k: 5, validation: {fraction: 0.2}}")
    name = value.get("method", "knn-shapley")
    try:
        cls = ValueMethod.registry.get(name, field="value.method")
        model = _value_section_model(cls)
        unknown = sorted(set(value) - set(model.model_fields))
        if unknown:
            accepted = [k for k in model.model_fields if k != "method"]
            raise ValueError(f"value.{unknown[0]} is not a setting of method {name!r}. "
                             f"Accepted keys beside method: {', '.join(accepted)}.")
        return model.model_validate({**value, "method": name})
    except CurationError as exc:
        raise ValueError(str(exc)) from None
    except ValidationError as exc:
        raise ValueError(_errors_in_one_line(exc)) from None


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its local ``#/$defs/...`` references replaced by their definitions (a
    section's schema is embedded in the recipe's, where its own ``$defs`` would not resolve)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


class _ValueSchema:
    """The ``value`` section's JSON Schema: one alternative per known valuation method."""

    @classmethod
    def __get_pydantic_json_schema__(cls, _core_schema: Any, _handler: Any) -> dict[str, Any]:
        from curation.value.pool import ValueMethod

        alternatives = [_inline_refs(_value_section_model(ValueMethod.registry.get(n, field="value.method"))
                                     .model_json_schema()) for n in ValueMethod.registry.names()]
        return {"description": "Data valuation of every pool item against a held-out set; `method` picks the "
                               "alternative (default knn-shapley). See docs/methods/valuation.md.",
                "oneOf": alternatives}


#: The ``value`` section: typed per method (:class:`curation.value.pool.ValueMethod`), plus ``validation``.
ValueConfig = Annotated[Any, PlainValidator(_value_section), _ValueSchema]


class OutputConfig(_Strict):
    """Where versions go, and how long finished stage outputs are kept for reuse."""

    root: str = Field(default="out", description="where versions (<root>/<name>/vNNNN), the stage store and the "
                      "embedding cache go")
    rows_per_shard: int = Field(default=100_000, gt=0, description="rows per Parquet shard of the published data")
    stages_max_age_days: float = Field(default=14, ge=0, description="stage outputs unused this long are removed")
    stages_max_gb: float = Field(default=20, ge=0, description="the stage store is trimmed (least recently used "
                                 "first) to this size after each build")


class Recipe(_Strict):
    """A whole curation job."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the dataset's directory under output.root: one "
                      "path segment of letters, digits and _.-, not starting with '.' (the tool's own folders "
                      "are .stages, .cache, ...) and not LATEST")
    seed: int = Field(default=0, description="the root seed: each stage draws from its own child stream; same "
                      "recipe + inputs + seed = same bytes")
    sources: list[SourceConfig] = Field(min_length=1, description="where the candidates come from")
    groups: list[str] = Field(default=[], description="group columns; several make intersectional groups ('f|x')")
    embed: EmbedConfig = Field(default=EmbedConfig(), description="how text is embedded (tabular sources use the "
                               "feature encoder)")
    cluster: ClusterConfig = Field(default=ClusterConfig(), description="k-means over the embeddings")
    select: SelectConfig = Field(description="the selection method and its settings; `method` picks the alternative")
    reference: HoldoutConfig | None = Field(default=None, description="the held-out target set the influence and "
                                            "knn-shapley scorers (and valuation) judge items against")
    value: ValueConfig | None = Field(default=None, description="data valuation of every pool item (the value stage)")
    output: OutputConfig = Field(default=OutputConfig(), description="where versions go; stage store retention")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        # the name is a directory under output.root: '..' would publish beside the root, '.x'
        # would mix a dataset with the tool's own folders (.stages, .cache, .work)
        if v.startswith(".") or v == "LATEST":
            raise ValueError(f"{v!r} is not a dataset name: it must not start with '.' (the tool keeps .stages, "
                             ".cache and its other folders under output.root) and must not be LATEST; use e.g. "
                             "reviews-mix")
        return v

    @model_validator(mode="after")
    def _unique_source_names(self) -> Recipe:
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique; {dup[0]!r} appears more than once")
        kinds = {"text" if s.text else "tabular" for s in self.sources}
        if len(kinds) > 1:
            raise ValueError("all sources must be text sources or all tabular sources, not a mix")
        if self.value is not None:
            if self.value.validation is not None and self.reference is not None:
                raise ValueError("give the held-out set once: `reference` or `value.validation` (both scorers and "
                                 "valuation use it), not both")
            if self.value.validation is None and self.reference is None:
                raise ValueError("value needs a held-out validation set: add `validation: {fraction: 0.2}` (or "
                                 "`{path: ...}`) to `value`, or a top-level `reference`")
            if self.sources[0].label is None:
                raise ValueError("value needs labels: set sources[].label")
        return self

    @property
    def holdout(self) -> HoldoutConfig | None:
        """The recipe's one held-out set: ``reference``, else ``value.validation``."""
        if self.reference is not None:
            return self.reference
        return self.value.validation if self.value is not None else None

    @property
    def is_text(self) -> bool:
        return self.sources[0].text is not None

    def canonical_json(self) -> str:
        """The resolved recipe as canonical JSON (sorted keys): what the manifest hashes."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        """sha256 of the canonical recipe without ``output.root``: where a version is written does
        not change what is in it, so the same recipe built under two roots has one hash (and
        byte-identical shards, which carry it)."""
        data = self.model_dump(mode="json")
        data["output"].pop("root", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"select.budget=500"`` -> (["select", "budget"], 500). Values are parsed as YAML."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r} must look like a.b=value, e.g. select.budget=500")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise RecipeError(f"--set {text!r} has an empty key")
    return path, yaml.safe_load(raw) if raw.strip() else ""


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value``; list items are addressed by index (sources.0.path)."""
    node: Any = data
    for i, key in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[_index(key, len(node), path[: i + 1])]
        else:
            node = node.setdefault(key, {})
    last = path[-1]
    if isinstance(node, list):
        node[_index(last, len(node), path)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise RecipeError(f"--set {'.'.join(path)}: {'.'.join(path[:-1])} is not a mapping")


def _index(key: str, n: int, path: list[str]) -> int:
    if not key.lstrip("-").isdigit() or not -n <= int(key) < n:
        raise RecipeError(f"--set {'.'.join(path)}: {key!r} is not an index of a list of {n} items")
    return int(key)


def format_validation_error(exc: ValidationError, data: dict[str, Any]) -> str:
    """One line per problem: ``field 'a.b' = value: message``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {loc}: unknown field (value {err['input']!r}). Remove it or check the spelling.")
        elif err["type"] == "missing":
            lines.append(f"  - {loc}: required field is missing.")
        else:
            shown = err.get("input")
            if isinstance(shown, dict):
                shown = {k: v for k, v in shown.items() if not isinstance(v, (dict, list))}
            lines.append(f"  - {loc or '(recipe)'} = {shown!r}: {msg}")
    return "invalid recipe:\n" + "\n".join(lines)


def load_recipe(source: str | Path | dict[str, Any], overrides: list[str] = ()) -> Recipe:
    """Load, override and validate a recipe (a YAML path or an already-parsed mapping).

    Relative ``sources[].path`` stay relative to the current directory (as the user typed them).

    Raises:
        RecipeError: a missing file, bad YAML, or any validation problem (all listed at once).
    """
    if isinstance(source, dict):
        data = json.loads(json.dumps(source))
    else:
        p = Path(source)
        if not p.is_file():
            raise RecipeError(f"recipe file {str(p)!r} does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise RecipeError(f"recipe {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a YAML mapping with name, sources, select, ...")
    for text in overrides:
        apply_override(data, *parse_override(text))
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, data)) from None


def recipe_json_schema() -> dict[str, Any]:
    """The recipe's JSON Schema (every key, its default and its doc; ``select`` and ``value``
    one alternative per method): what ``curate schema`` prints, for editors to complete and
    check recipes."""
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
